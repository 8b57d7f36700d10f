//! Strands and the trusted global scheduler: strands created on every CPU,
//! preempted by the APIC timer or yielding, run their whole body exactly
//! once and exit, under every policy of the sched-ext catalogue.

use spindle_tests::{boot_with, expect_status, records_of_type, ExitStatusKind};
use std::time::Duration;

/// Every policy `sched=` accepts.
const POLICIES: [&str; 7] = [
    "rr", "priority", "stride", "edf", "central", "steal", "weighted",
];

fn run_strands(smp: u32, policy: &str, count: u64) {
    let report = boot_with(
        smp,
        &format!("bench=tsc tsc_samples=1 selftest=strands strand_count={count} sched={policy}"),
        Duration::from_secs(180),
    );
    expect_status(&report, ExitStatusKind::Ok);
    let scalar = |name: &str| {
        report.document[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{policy} at -smp {smp}: scalar {name} missing"))
    };
    assert_eq!(report.document["sched"], policy);
    assert_eq!(scalar("strands_created"), count, "{policy} -smp {smp}");
    assert_eq!(scalar("strands_exited"), count, "{policy} -smp {smp}");
    assert_eq!(scalar("strands_lost"), 0, "{policy} -smp {smp}");
    assert_eq!(scalar("rejected_decisions"), 0, "{policy} -smp {smp}");
    // Half the strands yield 20 times each, the other half are preempted:
    // at least one switch in per yield, plus one per strand to start.
    assert!(
        scalar("context_switches") >= count / 2 * 20 + count,
        "{policy} -smp {smp}: {} switches",
        scalar("context_switches")
    );
    if smp > 1 && policy == "rr" {
        // Strands spread over the CPUs: every CPU ran strands. (Migrations
        // are no proof of it: strands started together are placed on
        // different CPUs at once and need not move.)
        let busy = report.document["busy_ns_per_cpu"]
            .as_array()
            .expect("busy_ns_per_cpu");
        assert_eq!(busy.len(), smp as usize);
        assert!(
            busy.iter().all(|ns| ns.as_u64().unwrap_or(0) > 0),
            "strands spread over the CPUs: {busy:?}"
        );
    }
}

#[test]
fn strands_run_and_exit_on_one_cpu() {
    run_strands(1, "rr", 16);
}

#[test]
fn strands_run_and_exit_on_two_cpus() {
    run_strands(2, "rr", 32);
}

#[test]
fn strands_run_and_exit_on_four_cpus() {
    run_strands(4, "rr", 64);
}

#[test]
fn every_policy_runs_strands_to_completion() {
    for policy in POLICIES {
        run_strands(2, policy, 16);
    }
}

#[test]
fn an_unknown_policy_is_refused() {
    let report = boot_with(1, "sched=nonsense", Duration::from_secs(60));
    expect_status(&report, ExitStatusKind::KernelFailed);
    let errors = records_of_type(&report, "error");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("known names: rr, priority, stride, edf, central, steal, weighted"),
        "{errors:?}"
    );
}
