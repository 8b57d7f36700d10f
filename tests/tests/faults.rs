//! The failure paths: deliberate faults are reported with their details and
//! end with the failure exit code; bad arguments are refused; a kernel that
//! stops answering is killed at the timeout; a triple fault is a failure.

use std::time::{Duration, Instant};

use spindle_tests::{boot, boot_with, expect_status, records_of_type, ExitStatusKind};

/// QEMU's exit status for the kernel's failure code (0x11 << 1 | 1).
const QEMU_FAILURE_STATUS: i32 = 35;

#[test]
fn page_fault_is_reported_with_address() {
    let report = boot(1, "fault=page");
    expect_status(&report, ExitStatusKind::Fault);
    assert_eq!(report.qemu_status, Some(QEMU_FAILURE_STATUS));
    let faults = records_of_type(&report, "fault");
    assert_eq!(faults.len(), 1, "one fault record: {}", report.serial_log);
    let fault = &faults[0];
    assert_eq!(fault["vector"], 14);
    assert_eq!(fault["cpu"], 0);
    assert_eq!(fault["cr2"], 0x0000_0dea_dbee_f000u64);
    assert!(
        fault["rip"].as_u64().unwrap() >= 0x10_0000,
        "rip inside the kernel image"
    );
    assert!(report
        .serial_log
        .contains("FAULT on cpu 0: page fault (vector 14)"));
}

#[test]
fn fault_on_an_application_processor_names_that_cpu() {
    let report = boot(2, "fault=invalid-opcode fault_cpu=1");
    expect_status(&report, ExitStatusKind::Fault);
    let faults = records_of_type(&report, "fault");
    assert_eq!(faults.len(), 1, "{}", report.serial_log);
    assert_eq!(faults[0]["vector"], 6);
    assert_eq!(faults[0]["cpu"], 1);
}

#[test]
fn general_protection_and_divide_errors_are_reported() {
    for (fault, vector) in [("general-protection", 13), ("divide", 0), ("breakpoint", 3)] {
        let report = boot(1, &format!("fault={fault}"));
        expect_status(&report, ExitStatusKind::Fault);
        let faults = records_of_type(&report, "fault");
        assert_eq!(faults[0]["vector"], vector, "fault={fault}");
    }
}

#[test]
fn panic_is_reported() {
    let report = boot(1, "fault=panic");
    expect_status(&report, ExitStatusKind::Fault);
    let panics = records_of_type(&report, "panic");
    assert_eq!(panics.len(), 1);
    assert!(panics[0]["message"]
        .as_str()
        .unwrap()
        .contains("deliberate panic"));
}

#[test]
fn triple_fault_is_a_failure() {
    let report = boot(1, "fault=triple");
    assert_ne!(report.status, ExitStatusKind::Ok);
    assert_ne!(report.qemu_status, Some(33));
}

#[test]
fn a_hung_kernel_is_killed_at_the_timeout() {
    let timeout = Duration::from_secs(8);
    let started = Instant::now();
    let report = boot_with(1, "fault=hang", timeout);
    expect_status(&report, ExitStatusKind::Timeout);
    assert!(
        started.elapsed() < timeout + Duration::from_secs(20),
        "the runner must stop at the timeout"
    );
}

#[test]
fn unknown_kernel_argument_is_refused() {
    let report = boot(1, "no_such_argument=1");
    expect_status(&report, ExitStatusKind::KernelFailed);
    let errors = records_of_type(&report, "error");
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown kernel argument 'no_such_argument'"));
}

#[test]
fn unknown_benchmark_is_refused() {
    let report = boot(1, "bench=tsc,nonsense");
    expect_status(&report, ExitStatusKind::KernelFailed);
    let errors = records_of_type(&report, "error");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("known names: timer, ipi, tsc"),
        "{:?}",
        errors
    );
}

#[test]
fn bad_number_is_refused() {
    let report = boot(1, "tick_hz=fast");
    expect_status(&report, ExitStatusKind::KernelFailed);
    let errors = records_of_type(&report, "error");
    assert!(errors[0]["message"].as_str().unwrap().contains("tick_hz"));
}

#[test]
fn stack_overflow_hits_the_guard_page_and_is_reported_as_a_double_fault() {
    for cpu in [0u64, 1] {
        let report = boot(2, &format!("fault=stack-overflow fault_cpu={cpu}"));
        expect_status(&report, ExitStatusKind::Fault);
        let faults = records_of_type(&report, "fault");
        assert_eq!(faults.len(), 1, "{}", report.serial_log);
        assert_eq!(
            faults[0]["vector"], 8,
            "a double fault, delivered on its IST stack"
        );
        assert_eq!(faults[0]["cpu"], cpu);
    }
}
