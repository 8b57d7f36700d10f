//! `spindle_tools::run` against fake QEMU scripts: success, timeout and kill, KVM fallback, failures.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{end, hello, print_lines, process_exists, successful_transcript, Scratch};
use serde_json::json;
use spindle_tools::record_writer::record_line;
use spindle_tools::{run, Accel, AccelChoice, ExitStatusKind, KvmProbe, RunError, RunOptions};

fn options(scratch: &Scratch, qemu: PathBuf) -> RunOptions {
    RunOptions {
        accel: AccelChoice::Tcg,
        kernel: Some(scratch.kernel()),
        qemu: Some(qemu),
        timeout: Duration::from_secs(30),
        echo: false,
        ..RunOptions::default()
    }
}

#[test]
fn successful_run_is_ok_and_passes_the_documented_command_line() {
    let scratch = Scratch::new("ok");
    let qemu = scratch.fake_qemu(
        "qemu",
        &format!("{}\nexit 33", print_lines(&successful_transcript())),
    );
    let options = RunOptions {
        smp: 3,
        memory_mib: 256,
        append: "log=debug".into(),
        bench: Some("ipi,timer".into()),
        ..options(&scratch, qemu)
    };
    let report = run(&options).unwrap();
    assert_eq!(report.status, ExitStatusKind::Ok, "{:?}", report.message);
    assert_eq!(report.message, None);
    assert_eq!(report.qemu_status, Some(33));
    assert_eq!(report.accel, Accel::Tcg);
    assert!(report.problems.is_empty());
    assert!(report.serial_log.contains("[cpu1] online"));
    assert!(report.serial_log.contains("@sp1 "));

    let document = &report.document;
    assert_eq!(document["accel"], json!("tcg"));
    assert_eq!(document["smp"], json!(3));
    assert_eq!(document["cpus_online"], json!(2));
    assert_eq!(document["exit"]["status"], json!("ok"));
    assert_eq!(document["exit"]["qemu_status"], json!(33));
    assert!(document["exit"]["wall_ms"].is_u64());
    let names: Vec<&str> = document["histograms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "apic.timer_lateness",
            "apic.timer_lateness.cpu0",
            "apic.timer_lateness.cpu1"
        ]
    );

    let arguments = scratch.arguments(1);
    let kernel = options.kernel.as_ref().unwrap().display().to_string();
    let expected: Vec<String> = [
        "-machine",
        "q35",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "3",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-chardev",
        "stdio,id=serial0,signal=off",
        "-serial",
        "chardev:serial0",
        "-kernel",
        &kernel,
        "-append",
        "log=debug bench=ipi,timer",
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect();
    assert_eq!(arguments, expected);
    assert_eq!(scratch.invocations(), 1);
}

#[test]
fn timeout_kills_qemu() {
    let scratch = Scratch::new("timeout");
    let process_id_file = scratch.path.join("process-id");
    let body = format!(
        "{}\necho \"$$\" > '{}'\nexec sleep 1000",
        print_lines(&[hello(), "[cpu0] spinning forever".to_string()]),
        process_id_file.display()
    );
    let qemu = scratch.fake_qemu("qemu", &body);
    let options = RunOptions {
        timeout: Duration::from_secs(1),
        ..options(&scratch, qemu)
    };
    let start = Instant::now();
    let report = run(&options).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.status, ExitStatusKind::Timeout);
    assert_eq!(report.qemu_status, None);
    assert_eq!(report.document["exit"]["status"], json!("timeout"));
    assert_eq!(report.document["exit"]["qemu_status"], json!(null));
    let message = report.message.unwrap();
    assert_eq!(
        message,
        "timed out after 1 s; QEMU killed (last line from the kernel: [cpu0] spinning forever)"
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    let process_id: u32 = fs::read_to_string(&process_id_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !process_exists(process_id),
        "QEMU (process {process_id}) still exists after run returned"
    );
}

#[test]
fn auto_falls_back_to_tcg_when_kvm_fails() {
    let scratch = Scratch::new("fallback");
    let body = format!(
        "case \" $* \" in *' kvm '*)\n\
         echo 'Could not access KVM kernel module: Permission denied' >&2\n\
         echo 'qemu-system-x86_64: failed to initialize kvm: Permission denied' >&2\n\
         exit 1;;\nesac\n{}\nexit 33",
        print_lines(&[hello(), end("ok")])
    );
    let qemu = scratch.fake_qemu("qemu", &body);
    let options = RunOptions {
        accel: AccelChoice::Auto,
        kvm_probe: KvmProbe::Assume { available: true },
        ..options(&scratch, qemu)
    };
    let report = run(&options).unwrap();
    assert_eq!(scratch.invocations(), 2);
    let first = scratch.arguments(1);
    let second = scratch.arguments(2);
    assert!(
        first.windows(2).any(|pair| pair == ["-accel", "kvm"]),
        "{first:?}"
    );
    assert!(
        first
            .windows(2)
            .any(|pair| pair == ["-cpu", "host,-arch-capabilities"]),
        "{first:?}"
    );
    assert!(
        second
            .windows(2)
            .any(|pair| pair == ["-accel", "tcg,thread=multi"]),
        "{second:?}"
    );
    assert!(
        second.windows(2).any(|pair| pair == ["-cpu", "max"]),
        "{second:?}"
    );
    assert_eq!(report.status, ExitStatusKind::Ok, "{:?}", report.message);
    assert_eq!(report.accel, Accel::Tcg);
    assert_eq!(report.document["accel"], json!("tcg"));
    assert_eq!(
        report.kvm_fallback.as_deref(),
        Some("Could not access KVM kernel module: Permission denied")
    );
}

/// A fake QEMU whose KVM guest says hello and then hits a KVM internal error
/// (QEMU pauses the guest forever); under TCG the kernel finishes.
fn kvm_internal_error_body() -> String {
    format!(
        "case \" $* \" in *' kvm '*)\n\
         {}\n\
         echo 'KVM internal error. Suberror: 1' >&2\n\
         echo 'emulation failure' >&2\n\
         exec sleep 1000;;\nesac\n{}\nexit 33",
        print_lines(&[hello(), "[cpu0] provoking int3".to_string()]),
        print_lines(&[hello(), end("ok")])
    )
}

#[test]
fn auto_falls_back_to_tcg_after_a_kvm_internal_error() {
    let scratch = Scratch::new("kvm-internal-error");
    let qemu = scratch.fake_qemu("qemu", &kvm_internal_error_body());
    let options = RunOptions {
        accel: AccelChoice::Auto,
        kvm_probe: KvmProbe::Assume { available: true },
        ..options(&scratch, qemu)
    };
    let start = Instant::now();
    let report = run(&options).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(scratch.invocations(), 2);
    assert_eq!(report.status, ExitStatusKind::Ok, "{:?}", report.message);
    assert_eq!(report.accel, Accel::Tcg);
    assert_eq!(
        report.kvm_fallback.as_deref(),
        Some("KVM internal error. Suberror: 1 (emulation failure)")
    );
}

#[test]
fn explicit_kvm_internal_error_fails_without_waiting_for_the_timeout() {
    let scratch = Scratch::new("kvm-internal-error-explicit");
    let qemu = scratch.fake_qemu("qemu", &kvm_internal_error_body());
    let options = RunOptions {
        accel: AccelChoice::Kvm,
        kvm_probe: KvmProbe::Assume { available: true },
        ..options(&scratch, qemu)
    };
    let start = Instant::now();
    let report = run(&options).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(scratch.invocations(), 1);
    assert_eq!(report.status, ExitStatusKind::QemuFailed);
    assert_eq!(report.qemu_status, None);
    let message = report.message.unwrap();
    assert!(
        message.contains("KVM internal error. Suberror: 1"),
        "{message}"
    );
    assert!(message.contains("--accel tcg"), "{message}");
}

#[test]
fn auto_does_not_fall_back_after_the_kernel_started() {
    // KVM worked (hello arrived); a later QEMU failure mentioning kvm is not retried.
    let scratch = Scratch::new("no-fallback");
    let body = format!(
        "{}\necho 'kvm: internal error' >&2\nexit 1",
        print_lines(&[hello()])
    );
    let qemu = scratch.fake_qemu("qemu", &body);
    let options = RunOptions {
        accel: AccelChoice::Auto,
        kvm_probe: KvmProbe::Assume { available: true },
        ..options(&scratch, qemu)
    };
    let report = run(&options).unwrap();
    assert_eq!(scratch.invocations(), 1);
    assert_eq!(report.status, ExitStatusKind::QemuFailed);
    assert_eq!(report.accel, Accel::Kvm);
    assert!(report.message.unwrap().contains("kvm: internal error"));
}

#[test]
fn explicit_kvm_does_not_fall_back() {
    let scratch = Scratch::new("kvm");
    let qemu = scratch.fake_qemu(
        "qemu",
        "echo 'failed to initialize kvm: No such file or directory' >&2\nexit 1",
    );
    let unusable = RunOptions {
        accel: AccelChoice::Kvm,
        kvm_probe: KvmProbe::Assume { available: false },
        ..options(&scratch, qemu.clone())
    };
    let error = run(&unusable).unwrap_err();
    assert!(matches!(error, RunError::KvmUnavailable { .. }), "{error}");
    assert_eq!(error.exit_code(), 3);
    assert_eq!(scratch.invocations(), 0);

    let failing = RunOptions {
        accel: AccelChoice::Kvm,
        kvm_probe: KvmProbe::Assume { available: true },
        ..options(&scratch, qemu)
    };
    let report = run(&failing).unwrap();
    assert_eq!(scratch.invocations(), 1);
    assert_eq!(report.status, ExitStatusKind::QemuFailed);
    assert_eq!(report.qemu_status, Some(1));
    assert!(report.kvm_fallback.is_none());
    let message = report.message.unwrap();
    assert!(message.contains("failed to initialize kvm"), "{message}");
}

#[test]
fn exit_classification_through_fake_qemu() {
    let fault = record_line(
        &json!({"t": "fault", "cpu": 1, "vector": 14, "name": "page fault", "rip": 4096}),
    );
    let error = record_line(&json!({"t": "error", "message": "unknown kernel argument frob"}));
    let good = record_line(&json!({"t": "scalar", "name": "x", "value": 1}));
    let corrupt = good.replace("\"x\"", "\"y\"");
    let truncated = good[..good.len() - 4].to_string();
    let cases: Vec<(&str, Vec<String>, i32, ExitStatusKind)> = vec![
        (
            "fault then failure exit",
            vec![hello(), fault],
            35,
            ExitStatusKind::Fault,
        ),
        (
            "error record",
            vec![hello(), error, end("fail")],
            35,
            ExitStatusKind::KernelFailed,
        ),
        (
            "corrupt record",
            vec![hello(), corrupt, end("ok")],
            33,
            ExitStatusKind::ProtocolError,
        ),
        (
            "truncated record",
            vec![hello(), truncated, end("ok")],
            33,
            ExitStatusKind::ProtocolError,
        ),
        (
            "no end record",
            vec![hello()],
            33,
            ExitStatusKind::ProtocolError,
        ),
        (
            "triple fault",
            vec![hello(), "[cpu0] about to fault".into()],
            0,
            ExitStatusKind::ProtocolError,
        ),
        ("QEMU error", vec![], 1, ExitStatusKind::QemuFailed),
    ];
    for (label, lines, status, expected) in cases {
        let scratch = Scratch::new("classify");
        let qemu = scratch.fake_qemu("qemu", &format!("{}\nexit {status}", print_lines(&lines)));
        let report = run(&options(&scratch, qemu)).unwrap();
        assert_eq!(report.status, expected, "{label}: {:?}", report.message);
        assert_eq!(report.qemu_status, Some(status), "{label}");
        assert_eq!(
            report.document["exit"]["status"],
            json!(expected.as_str()),
            "{label}"
        );
        assert!(report.message.is_some(), "{label}");
    }
}

#[test]
fn serial_input_reaches_the_kernel() {
    let scratch = Scratch::new("input");
    let body = format!(
        "{}\nread first\nread second\necho \"input: $first / $second\"\n{}\nexit 33",
        print_lines(&[hello()]),
        print_lines(&[end("ok")])
    );
    let qemu = scratch.fake_qemu("qemu", &body);
    let options = RunOptions {
        serial_input: Some(b"alpha\nbeta\n".to_vec()),
        ..options(&scratch, qemu)
    };
    let report = run(&options).unwrap();
    assert_eq!(report.status, ExitStatusKind::Ok, "{:?}", report.message);
    assert!(
        report.serial_log.contains("input: alpha / beta\n"),
        "{}",
        report.serial_log
    );
}

#[test]
fn output_without_a_final_newline_is_still_read() {
    let scratch = Scratch::new("no-newline");
    let body = format!(
        "{}\nprintf '%s' '{}'\nexit 33",
        print_lines(&[hello()]),
        end("ok")
    );
    let qemu = scratch.fake_qemu("qemu", &body);
    let report = run(&options(&scratch, qemu)).unwrap();
    assert_eq!(report.status, ExitStatusKind::Ok, "{:?}", report.message);
}

#[test]
fn missing_qemu_and_missing_kernel_are_errors() {
    let scratch = Scratch::new("missing");
    let missing_qemu = options(&scratch, scratch.path.join("no-such-qemu"));
    let error = run(&missing_qemu).unwrap_err();
    assert!(matches!(error, RunError::QemuMissing { .. }), "{error}");
    assert_eq!(error.exit_code(), 3);
    assert!(error.to_string().contains("not found"), "{error}");

    let qemu = scratch.fake_qemu("qemu", "exit 33");
    let missing_kernel = RunOptions {
        kernel: Some(scratch.path.join("no-such-kernel")),
        ..options(&scratch, qemu)
    };
    let error = run(&missing_kernel).unwrap_err();
    assert!(matches!(error, RunError::KernelMissing { .. }), "{error}");
    assert_eq!(scratch.invocations(), 0);
}

#[test]
fn qemu_missing_message_names_the_package() {
    let error = RunError::QemuMissing {
        program: "qemu-system-x86_64".into(),
    };
    assert_eq!(
        error.to_string(),
        "qemu-system-x86_64 not found; install it with: apt-get install -y qemu-system-x86"
    );
}
