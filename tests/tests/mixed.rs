//! `--bench mixed` under every policy: CPU-bound strands, sleepers, wake-up
//! ping-pongs, a yielding pair and periodic strands at once, with nothing
//! lost; stride's 3:2:1 shares; EDF meeting a feasible set's deadlines.

use spindle_tests::{boot_tcg, boot_under, boot_with, expect_status, AccelChoice, ExitStatusKind};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(240);
const POLICIES: [&str; 7] = [
    "rr", "priority", "stride", "edf", "central", "steal", "weighted",
];

fn scalar_f64(report: &spindle_tests::RunReport, name: &str) -> f64 {
    report.document[name]
        .as_f64()
        .unwrap_or_else(|| panic!("scalar {name} missing"))
}

/// Samples in histogram `name` (0 when the run reported none).
fn samples(report: &spindle_tests::RunReport, name: &str) -> u64 {
    report.document["histograms"]
        .as_array()
        .and_then(|all| all.iter().find(|histogram| histogram["name"] == name))
        .and_then(|histogram| histogram["count"].as_u64())
        .unwrap_or(0)
}

fn expect_nothing_lost(report: &spindle_tests::RunReport, label: &str) {
    expect_status(report, ExitStatusKind::Ok);
    let created = report.document["strands_created"].as_u64().unwrap();
    assert!(created >= 13, "{label}: {created} strands");
    assert_eq!(
        report.document["strands_exited"].as_u64(),
        Some(created),
        "{label}"
    );
    assert_eq!(report.document["strands_lost"].as_u64(), Some(0), "{label}");
    assert_eq!(
        report.document["rejected_decisions"].as_u64(),
        Some(0),
        "{label}"
    );
    assert_eq!(
        report.document["ejections"].as_array().map(Vec::len),
        Some(0),
        "{label}: {}",
        report.document["ejections"]
    );
}

#[test]
fn every_policy_runs_mixed_at_one_two_and_four_cpus_losing_nothing() {
    for smp in [1, 2, 4] {
        for policy in POLICIES {
            let report = boot_with(
                smp,
                &format!(
                    "bench=mixed mixed_ms=200 sched={policy} watchdog_ms=30000 budget_ms=2000"
                ),
                TIMEOUT,
            );
            let label = format!("{policy} at -smp {smp}");
            expect_nothing_lost(&report, &label);
            // Under rr every piece of the workload gets its turn: sleepers
            // wake, the yielding pair switches, periodic jobs finish.
            // (Checked at -smp 2, where the trio has a CPU of its own and no
            // vCPU waits for a host core, and under TCG:
            // under the PVM "KVM" of the development machines a switch takes
            // milliseconds. Other policies may legitimately make some piece
            // wait the whole 200 ms: strict priority can resume a yielder at
            // once, and central's single queue can hold periodic strands
            // behind pinned ones.)
            if policy == "rr" && smp == 2 && report.document["accel"] == "tcg" {
                for name in ["sched.timer_lateness", "sched.switch"] {
                    assert!(samples(&report, name) > 0, "{label}: no {name} samples");
                }
                assert!(report.document["edf.jobs"].as_u64().unwrap() > 0, "{label}");
            }
        }
    }
}

#[test]
fn stride_gives_the_trio_its_three_two_one_shares_within_five_percent() {
    // Shares over one second need a guest that makes many scheduling
    // decisions in it: under the PVM "KVM" of the development machines each
    // policy call takes about a millisecond, the trio gets a few dozen
    // stints, and the measured shares are noise (CI saw one run over 5 %).
    // Like the EDF test below, this runs under TCG.
    let report = boot_tcg(
        2,
        "bench=mixed mixed_ms=1000 sched=stride watchdog_ms=30000 budget_ms=2000",
        TIMEOUT,
    );
    expect_nothing_lost(&report, "stride");
    let error = scalar_f64(&report, "stride.share_error_pct");
    assert!(error <= 5.0, "share error {error} %");
}

#[test]
fn round_robin_ignores_tickets() {
    // The same trio under rr shares equally: far from 3:2:1. This is what
    // makes the stride figure above mean something.
    let report = boot_with(
        2,
        "bench=mixed mixed_ms=1000 sched=rr watchdog_ms=30000 budget_ms=2000",
        TIMEOUT,
    );
    expect_nothing_lost(&report, "rr");
    assert!(scalar_f64(&report, "stride.share_error_pct") > 20.0);
}

#[test]
fn edf_meets_every_deadline_of_a_feasible_periodic_set() {
    // Deadlines are judged in the guest's time. Under KVM or plain TCG that
    // is the host's time, and a host that does not run a virtual CPU (or
    // QEMU's timer thread) for a few milliseconds makes a job late that EDF
    // ran on time: CI's 2-core machine saw 2 and 3 late jobs of 198 that way
    // (and once 92), and a loaded host here makes most jobs late, with
    // `stalled_ns_per_cpu` showing a third of the CPUs' time taken. So the
    // check runs under TCG counting instructions (`-icount`), where the
    // guest's clocks advance only as it runs and the host can take no time
    // from it. That mode runs one virtual CPU at a time, and with several
    // it delivered no ticks to a busy CPU 1 (QEMU 7.2), so the run is at
    // -smp 1: both periodic strands share CPU 0 with every other strand of
    // `mixed` (the stride trio, sleepers, ping-pongs, the yielding pair),
    // and EDF must still meet every deadline.
    let report = boot_under(
        AccelChoice::TcgIcount,
        1,
        "bench=mixed mixed_ms=1000 sched=edf watchdog_ms=30000 budget_ms=2000",
        TIMEOUT,
    );
    expect_nothing_lost(&report, "edf");
    assert_eq!(report.document["accel"], "tcg-icount");
    assert_eq!(
        report.document["edf.deadline_misses_in_stalls"].as_u64(),
        Some(0)
    );
    let jobs = report.document["edf.jobs"].as_u64().unwrap();
    assert!(jobs >= 190, "two strands, 10 ms periods, 1 s: {jobs} jobs");
    let misses = report.document["edf.deadline_misses"].as_u64().unwrap();
    assert_eq!(
        misses, 0,
        "{misses} of {jobs} jobs missed their deadline (stalled: {})",
        report.document["stalled_ns_per_cpu"]
    );
}

#[test]
fn edf_reports_the_misses_of_an_infeasible_periodic_set() {
    // Each job now computes 12 ms in its 10 ms period while declaring a
    // 2 ms budget: admission control lets the set in, and no schedule can
    // meet it. EDF keeps running it, loses nothing, and reports the misses.
    let report = boot_tcg(
        2,
        "bench=mixed mixed_ms=1000 sched=edf mixed_job_us=12000 watchdog_ms=30000 budget_ms=2000",
        TIMEOUT,
    );
    expect_nothing_lost(&report, "edf");
    assert_eq!(report.document["sched"], "edf");
    let jobs = report.document["edf.jobs"].as_u64().unwrap();
    let misses = report.document["edf.deadline_misses"].as_u64().unwrap();
    assert!(jobs >= 50, "{jobs} jobs");
    assert!(misses * 2 >= jobs, "only {misses} of {jobs} jobs missed");
}
