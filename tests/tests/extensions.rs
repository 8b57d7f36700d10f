//! The extension model on real CPUs: the dispatch benchmark's histograms,
//! handlers churned on CPU 0 while CPUs 1-3 raise (nothing lost, doubled or
//! late), and the `timestamps` demonstration extension end to end.

use spindle_tests::{
    boot, boot_with, expect_status, histogram, records_of_type, scalar_list, scalar_u64,
    ExitStatusKind,
};
use std::time::Duration;

/// Every histogram `--bench dispatch` promises.
const DISPATCH_HISTOGRAMS: [&str; 10] = [
    "dispatch.direct",
    "dispatch.indirect",
    "dispatch.raise.h0",
    "dispatch.raise.h1",
    "dispatch.raise.h1g",
    "dispatch.raise.h1g.separate",
    "dispatch.raise.h4",
    "dispatch.raise.h16",
    "dispatch.install",
    "dispatch.raise.h1g.contended",
];

#[test]
fn handlers_churned_on_one_cpu_while_three_raise_lose_nothing() {
    let report = boot_with(
        4,
        "bench=tsc tsc_samples=1 selftest=dispatch-churn selftest_ms=1000",
        Duration::from_secs(120),
    );
    expect_status(&report, ExitStatusKind::Ok);
    assert_eq!(scalar_u64(&report, "churn.duration_ms"), 1000);
    let raises = scalar_u64(&report, "churn.raises");
    let per_cpu = scalar_list(&report, "churn.raises_per_cpu");
    assert_eq!(per_cpu.len(), 4);
    assert_eq!(per_cpu[0], 0, "CPU 0 churns, it does not raise");
    assert!(
        per_cpu[1..].iter().all(|&count| count > 0),
        "every other CPU raised: {per_cpu:?}"
    );
    assert_eq!(per_cpu.iter().sum::<u64>(), raises);
    // No lost or doubled call: each raise ran the permanent and the default
    // handler once, and what the raises saw equals what the handlers counted.
    assert_eq!(scalar_u64(&report, "churn.permanent_calls"), raises);
    assert_eq!(scalar_u64(&report, "churn.default_calls"), raises);
    assert_eq!(
        scalar_u64(&report, "churn.single_calls_seen"),
        scalar_u64(&report, "churn.single_calls_counted")
    );
    assert_eq!(
        scalar_u64(&report, "churn.extension_calls_seen"),
        scalar_u64(&report, "churn.extension_calls_counted")
    );
    for rule in [
        "churn.called_after_removal",
        "churn.guard_violations",
        "churn.torn_extension",
        "churn.wrong_permanent",
        "churn.wrong_default",
        "churn.problems",
    ] {
        assert_eq!(scalar_u64(&report, rule), 0, "{rule}");
    }
    assert!(scalar_u64(&report, "churn.single_installs") >= 2);
    assert!(scalar_u64(&report, "churn.extension_installs") >= 2);
}

#[test]
fn a_grace_period_held_up_by_a_raise_is_reported_with_its_cpu() {
    // CPU 1 holds a raise for 1.5 s while CPU 0 installs a handler on the
    // same event: the install waits for the raise, and after a second the
    // kernel prints the stall, naming CPU 1 (the kernel checks the details
    // itself and fails the run otherwise).
    let report = boot_with(
        2,
        "bench=tsc tsc_samples=1 selftest=grace-stall",
        Duration::from_secs(120),
    );
    expect_status(&report, ExitStatusKind::Ok);
    assert!(scalar_u64(&report, "grace_stall.waited_ms") >= 1000);
    assert!(scalar_u64(&report, "grace_stall.reports") >= 1);
    assert!(scalar_u64(&report, "grace_stalls") >= 1);
    let warning = report
        .serial_log
        .lines()
        .find(|line| line.contains("a grace period has waited"))
        .unwrap_or_else(|| panic!("no stall warning in:\n{}", report.serial_log));
    assert!(
        warning.contains("event selftest.grace_stall")
            && warning.contains(
                "for cpu 1 (inside a raise that does not end, or spinning with interrupts off)"
            ),
        "{warning}"
    );
}

#[test]
fn a_grace_stall_test_needs_two_cpus() {
    let report = boot(1, "bench=tsc tsc_samples=1 selftest=grace-stall");
    expect_status(&report, ExitStatusKind::KernelFailed);
    assert!(
        report
            .serial_log
            .contains("grace-stall: grace-stall needs at least 2 CPUs"),
        "{}",
        report.serial_log
    );
}

#[test]
fn dispatch_benchmark_fills_every_histogram_on_every_cpu() {
    let samples = 4;
    let report = boot_with(
        2,
        &format!("bench=dispatch dispatch_samples={samples} dispatch_calls=64"),
        Duration::from_secs(120),
    );
    expect_status(&report, ExitStatusKind::Ok);
    for name in DISPATCH_HISTOGRAMS {
        let summary = histogram(&report, name);
        let expected = if name.ends_with(".contended") {
            samples
        } else {
            2 * samples
        };
        assert_eq!(
            summary["count"].as_u64(),
            Some(expected),
            "{name}: {summary}"
        );
        assert!(
            summary["p50"].as_u64().unwrap_or(0) > 0,
            "{name}: {summary}"
        );
    }
    // More handlers cost more: sixteen handlers are slower than none.
    let p50 = |name: &str| histogram(&report, name)["p50"].as_u64().unwrap();
    assert!(p50("dispatch.raise.h16") > p50("dispatch.raise.h0"));
}

#[test]
fn timestamps_extension_prefixes_console_lines_until_uninstalled() {
    let report = boot(1, "bench=tsc tsc_samples=1 extensions=timestamps");
    expect_status(&report, ExitStatusKind::Ok);
    let extensions = report.document["extensions"]
        .as_array()
        .expect("extensions scalar");
    assert_eq!(extensions.len(), 1, "{extensions:?}");
    let timestamps = &extensions[0];
    assert_eq!(timestamps["name"], "timestamps");
    assert_eq!(timestamps["provenance"], "compiler-checked");
    assert_eq!(timestamps["handlers"], 1);
    let lines = timestamps["lines"].as_u64().unwrap();
    assert!(lines > 0);
    // Time in its handler is charged to its domain, one call per line.
    assert_eq!(timestamps["handler_calls"].as_u64(), Some(lines));

    let human: Vec<&str> = report
        .serial_log
        .lines()
        .filter(|line| !line.starts_with("@sp1"))
        .collect();
    let stamped = |line: &str| {
        line.starts_with('[')
            && line.get(13..15) == Some("] ")
            && line[1..13]
                .trim_start()
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
    };
    let stamped_lines = human.iter().filter(|line| stamped(line)).count();
    assert!(stamped_lines as u64 >= lines, "{human:?}");
    let last = human
        .iter()
        .rev()
        .find(|line| line.contains("kernel:"))
        .unwrap();
    assert!(
        last.starts_with("kernel: extensions uninstalled"),
        "after uninstall, print writes plain lines again: {last}"
    );
}

#[test]
fn without_extensions_console_lines_are_plain() {
    let report = boot(1, "bench=tsc tsc_samples=1");
    expect_status(&report, ExitStatusKind::Ok);
    assert_eq!(
        report.document["extensions"].as_array().map(Vec::len),
        Some(0)
    );
    assert!(report
        .serial_log
        .lines()
        .filter(|line| line.contains("kernel:"))
        .all(|line| line.starts_with("kernel:")));
}

#[test]
fn unknown_extension_and_selftest_are_refused() {
    for (append, expected) in [
        ("extensions=nonsense", "known names: timestamps"),
        ("selftest=nonsense", "known names: dispatch-churn"),
    ] {
        let report = boot(1, append);
        expect_status(&report, ExitStatusKind::KernelFailed);
        let errors = records_of_type(&report, "error");
        assert!(
            errors[0]["message"].as_str().unwrap().contains(expected),
            "{append}: {errors:?}"
        );
    }
}
