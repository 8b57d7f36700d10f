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
        // The watchdog bound is raised to sched_ext's 30 s: these runs test
        // that every policy completes its strands, and on a slow hypervisor a
        // strand may wait seconds (the ejection tests are in swaps.rs). The
        // policy call budget is raised to 2 s likewise: a call spinning on a
        // lock whose holder's virtual CPU is descheduled can pass 100 ms.
        &format!(
            "bench=tsc tsc_samples=1 selftest=strands strand_count={count} sched={policy} \
             watchdog_ms=30000 budget_ms=2000"
        ),
        Duration::from_secs(180),
    );
    expect_status(&report, ExitStatusKind::Ok);
    let scalar = |name: &str| {
        report.document[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{policy} at -smp {smp}: scalar {name} missing"))
    };
    assert_eq!(
        report.document["sched"], policy,
        "{policy} -smp {smp} was replaced: {}",
        report.document["ejections"]
    );
    assert_eq!(scalar("strands_created"), count, "{policy} -smp {smp}");
    assert_eq!(scalar("strands_exited"), count, "{policy} -smp {smp}");
    assert_eq!(scalar("strands_lost"), 0, "{policy} -smp {smp}");
    assert_eq!(scalar("rejected_decisions"), 0, "{policy} -smp {smp}");
    // Tickless idle: every CPU but CPU 0 stopped its tick when it ran out of
    // strands (at the latest once all had exited); CPU 0 always ticks.
    let tickless = spindle_tests::scalar_list(&report, "tickless_entries_per_cpu");
    assert_eq!(tickless.len(), smp as usize, "{policy} -smp {smp}");
    assert_eq!(tickless[0], 0, "{policy} -smp {smp}: CPU 0 went tickless");
    assert!(
        tickless[1..].iter().all(|&entries| entries > 0),
        "{policy} -smp {smp}: a CPU never went tickless: {tickless:?}"
    );
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

#[test]
fn tickless_off_keeps_every_cpu_ticking() {
    let report = boot_with(
        2,
        "bench=tsc tsc_samples=1 selftest=strands strand_count=8 tickless=off watchdog_ms=30000 budget_ms=2000",
        Duration::from_secs(180),
    );
    expect_status(&report, ExitStatusKind::Ok);
    let tickless = spindle_tests::scalar_list(&report, "tickless_entries_per_cpu");
    assert_eq!(tickless, [0, 0]);
}

/// Runs `selftest=strand-ops` and checks join, directed yield and affinity.
fn run_strand_operations(smp: u32, policy: &str) -> serde_json::Value {
    let report = boot_with(
        smp,
        &format!("bench=tsc tsc_samples=1 selftest=strand-ops sched={policy} watchdog_ms=30000 budget_ms=2000"),
        Duration::from_secs(240),
    );
    expect_status(&report, ExitStatusKind::Ok);
    let document = report.document.clone();
    let scalar = |name: &str| {
        document[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{policy} smp {smp}: scalar {name} missing"))
    };
    assert_eq!(scalar("strands_lost"), 0, "{policy} smp {smp}");
    assert_eq!(
        scalar("strands_created"),
        scalar("strands_exited"),
        "{policy} smp {smp}"
    );
    // Every child was joined after its body finished, and again at once.
    assert_eq!(scalar("ops.joined"), scalar("ops.join_children"));
    assert_eq!(scalar("ops.joined_again"), scalar("ops.join_children"));
    assert_eq!(scalar("ops.self_join_refused"), 1);
    // A strand moved itself from CPU 0 to the last CPU; a blocked one was
    // moved by another context and woke there; an empty set is refused.
    assert_eq!(scalar("ops.moved_itself"), 1, "{policy} smp {smp}");
    assert_eq!(scalar("ops.moved_while_blocked"), 1, "{policy} smp {smp}");
    assert_eq!(scalar("ops.empty_set_refused"), 1);
    assert_eq!(scalar("affinity_changes"), 2, "{policy} smp {smp}");
    // Each directed yield was either granted or refused, never lost.
    assert_eq!(
        scalar("directed_yields") + scalar("directed_yields_refused"),
        scalar("ops.directed_rounds"),
        "{policy} smp {smp}"
    );
    assert_eq!(
        document["ejections"].as_array().map(Vec::len),
        Some(0),
        "{policy} smp {smp}: {}",
        document["ejections"]
    );
    document
}

#[test]
fn join_directed_yield_and_affinity_work_on_one_two_and_four_cpus() {
    for smp in [1, 2, 4] {
        let document = run_strand_operations(smp, "rr");
        // rr grants a directed yield to a strand queued on the caller's CPU:
        // all but the last ones, made when the partner has exited.
        let granted = document["directed_yields"].as_u64().unwrap();
        assert!(granted >= 300, "smp {smp}: {granted} of 400 granted");
        let handed_over = document["histograms"]
            .as_array()
            .and_then(|histograms| {
                histograms
                    .iter()
                    .find(|histogram| histogram["name"] == "sched.directed_yield")
            })
            .and_then(|histogram| histogram["count"].as_u64());
        assert!(
            handed_over.is_some_and(|count| count > 0),
            "smp {smp}: the hand-over histogram is reported"
        );
    }
}

#[test]
fn every_policy_handles_the_strand_operations() {
    for policy in POLICIES {
        run_strand_operations(2, policy);
    }
}
