//! The `spindle` binary end to end with a fake QEMU: exit codes, `--json`, `--hgrm`, output.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{hello, print_lines, successful_transcript, Scratch};

fn spindle(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(arguments)
        .env_remove("SPINDLE_QEMU")
        .env_remove("SPINDLE_FORCE_KVM_PROBE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn successful_run_writes_json_and_hgrm() {
    let scratch = Scratch::new("binary-ok");
    let qemu = scratch.fake_qemu(
        "qemu",
        &format!("{}\nexit 33", print_lines(&successful_transcript())),
    );
    let kernel = scratch.kernel();
    let json_path = scratch.path.join("out").join("run.json");
    fs::create_dir_all(json_path.parent().unwrap()).unwrap();
    let hgrm_directory = scratch.path.join("hgrm");
    let output = spindle(&[
        "run",
        "--accel",
        "tcg",
        "--smp",
        "2",
        "--kernel",
        kernel.to_str().unwrap(),
        "--qemu",
        qemu.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
        "--hgrm",
        hgrm_directory.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    // Human lines are echoed, records are not.
    assert!(stdout.contains("spindle booting\n"), "{stdout}");
    assert!(stdout.contains("[cpu1] online\n"), "{stdout}");
    assert!(!stdout.contains("@sp1"), "{stdout}");
    assert!(
        stdout.contains("cpus_online=2 apic_mode=x2apic accel=tcg tsc_hz=2994000000 boot_ms=12.5"),
        "{stdout}"
    );
    assert!(stdout.contains("apic.timer_lateness"), "{stdout}");
    assert!(stdout.contains("  cpu1"), "{stdout}");
    assert!(stdout.trim_end().ends_with("spindle: ok"), "{stdout}");

    let document: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(document["exit"]["status"], "ok");
    assert_eq!(document["smp"], 2);
    for name in [
        "apic.timer_lateness",
        "apic.timer_lateness.cpu0",
        "apic.timer_lateness.cpu1",
    ] {
        let hgrm = fs::read_to_string(hgrm_directory.join(format!("{name}.hgrm"))).unwrap();
        assert!(
            hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
            "{hgrm}"
        );
        assert!(hgrm.contains("#[Buckets = "), "{hgrm}");
    }
}

#[test]
fn quiet_suppresses_human_lines() {
    let scratch = Scratch::new("binary-quiet");
    let qemu = scratch.fake_qemu(
        "qemu",
        &format!("{}\nexit 33", print_lines(&successful_transcript())),
    );
    let kernel = scratch.kernel();
    let output = spindle(&[
        "run",
        "--quiet",
        "--accel",
        "tcg",
        "--kernel",
        kernel.to_str().unwrap(),
        "--qemu",
        qemu.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    assert!(!stdout.contains("spindle booting"), "{stdout}");
    assert!(stdout.contains("spindle: ok"), "{stdout}");
}

#[test]
fn exit_codes() {
    let scratch = Scratch::new("binary-codes");
    let kernel = scratch.kernel();
    let kernel = kernel.to_str().unwrap();
    let cases = [
        (
            "sleeper",
            "exec sleep 1000".to_string(),
            4,
            "timed out after 1 s; QEMU killed",
        ),
        (
            "failer",
            format!("{}\nexit 35", print_lines(&[hello()])),
            1,
            "kernel-failed",
        ),
        (
            "nothing",
            format!("{}\nexit 33", print_lines(&[hello()])),
            6,
            "no end record",
        ),
        (
            "broken",
            "echo 'qemu: cannot do it' >&2; exit 1".to_string(),
            3,
            "qemu: cannot do it",
        ),
    ];
    for (name, body, code, needle) in cases {
        let qemu = scratch.fake_qemu(name, &body);
        let output = spindle(&[
            "run",
            "--accel",
            "tcg",
            "--timeout",
            "1",
            "--kernel",
            kernel,
            "--qemu",
            qemu.to_str().unwrap(),
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
    }
    let missing = spindle(&[
        "run",
        "--kernel",
        kernel,
        "--qemu",
        "/nonexistent/qemu-system-x86_64",
    ]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing.stderr).starts_with("spindle: /nonexistent/qemu-system-x86_64 not found"));
    let usage = spindle(&["run", "--smp", "0"]);
    assert_eq!(usage.status.code(), Some(2));
    let no_kernel = spindle(&["run", "--kernel", "/nonexistent/kernel"]);
    assert_eq!(no_kernel.status.code(), Some(2));
}
