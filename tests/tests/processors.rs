//! Processor allocation to extension domains (`selftest=processors`): grants, revocations met within the notice, the abort protocol, releases, refusals, and the ejection of a domain whose client panics, with nothing lost.
//!
//! These runs ask for TCG: the classification of a revocation (given up in
//! time or taken by force) depends on a 3 ms notice against `rr`'s 10 ms
//! slice, and on this project's nested "KVM" (PVM) a policy call alone can
//! take milliseconds.

use spindle_tests::{boot_tcg, expect_status, ExitStatusKind, RunReport};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const POLICIES: [&str; 7] = [
    "rr", "priority", "stride", "edf", "central", "steal", "weighted",
];

fn run(smp: u32, policy: &str) -> RunReport {
    let report = boot_tcg(
        smp,
        &format!("bench=tsc tsc_samples=1 selftest=processors sched={policy} watchdog_ms=30000 budget_ms=2000"),
        TIMEOUT,
    );
    expect_status(&report, ExitStatusKind::Ok);
    report
}

fn scalar(report: &RunReport, name: &str) -> u64 {
    report.document[name]
        .as_u64()
        .unwrap_or_else(|| panic!("scalar {name} missing"))
}

/// What every run must show, whatever the policy and the CPU count.
fn expect_protocol_kept(report: &RunReport, smp: u32, policy: &str) {
    let context = format!("{policy} at -smp {smp}");
    let cpus = u64::from(smp) - 1;
    assert_eq!(scalar(report, "alloc.cpus"), cpus, "{context}");
    assert_eq!(scalar(report, "strands_lost"), 0, "{context}");
    assert_eq!(
        scalar(report, "strands_created"),
        scalar(report, "strands_exited"),
        "{context}"
    );
    // CPU 0, a CPU that does not exist, a domain that does not exist, and a
    // revocation by a domain that holds nothing are all refused.
    assert_eq!(scalar(report, "alloc.refusals"), 4, "{context}");
    // No strand ever ran on a CPU its domain did not hold.
    assert_eq!(scalar(report, "alloc.misplaced"), 0, "{context}");
    // Four grants of every CPU but CPU 0, each announced on its CPU.
    assert_eq!(scalar(report, "alloc.grants"), 4 * cpus, "{context}");
    assert_eq!(scalar(report, "alloc.added"), 4 * cpus, "{context}");
    if cpus == 0 {
        return;
    }
    // Cooperative and final revocations are given up in time; in the abort
    // phase the strands ignore a 3 ms notice and are preempted by force
    // (a CPU that the domain's policy left idle gives itself up instead).
    let forced = scalar(report, "alloc.forced");
    assert!(forced >= 1, "{context}: no revocation was forced");
    // Every grant ended in exactly one way. (A strand that read the release
    // phase's mode just before it ended may give its CPU back itself in the
    // last phase, so a release can stand in for a given-up revocation.)
    let released = scalar(report, "alloc.released");
    assert!(released >= cpus, "{context}: {released} releases");
    assert_eq!(
        scalar(report, "alloc.given_up") + forced + released,
        4 * cpus,
        "{context}"
    );
    // Each forced revocation named the domain strand it preempted.
    assert_eq!(scalar(report, "alloc.forced_named"), forced, "{context}");
    // The domain's strands survived being preempted by force and finished.
    assert_eq!(scalar(report, "alloc.domain_finished"), cpus, "{context}");
    // The domain whose client panics was ejected, and its strands finished
    // in the default domain.
    assert_eq!(scalar(report, "alloc.domain_ejections"), 1, "{context}");
    assert_eq!(scalar(report, "alloc.ejected_finished"), cpus, "{context}");
    let ejections = report.document["ejections"].as_array().unwrap();
    assert_eq!(ejections.len(), 1, "{context}: {ejections:?}");
    assert_eq!(ejections[0]["extension"], "alloc-broken");
    assert_eq!(ejections[0]["reason"], "panicked in processor_added");
    // The default policy stayed: the domain's fault was the domain's.
    assert_eq!(report.document["sched"], policy, "{context}");
    assert_eq!(scalar(report, "rejected_decisions"), 0, "{context}");
}

#[test]
fn one_cpu_has_nothing_to_grant() {
    let report = run(1, "rr");
    expect_protocol_kept(&report, 1, "rr");
}

#[test]
fn two_cpus_change_hands_under_rr() {
    let report = run(2, "rr");
    expect_protocol_kept(&report, 2, "rr");
}

#[test]
fn four_cpus_change_hands_under_rr() {
    let report = run(4, "rr");
    expect_protocol_kept(&report, 4, "rr");
}

#[test]
fn every_default_policy_hands_its_strands_over_when_cpus_change_hands() {
    for policy in POLICIES {
        let report = run(2, policy);
        expect_protocol_kept(&report, 2, policy);
    }
}
