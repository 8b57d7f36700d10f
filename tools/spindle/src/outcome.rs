//! Classifying a finished QEMU run: exit status plus what the kernel said.
//!
//! The rules, in order (the first that applies wins):
//!
//! | situation | status |
//! |---|---|
//! | the deadline passed and QEMU was killed | [`ExitStatusKind::Timeout`] |
//! | QEMU reported a fatal KVM error (it stops the guest; the runner kills it) | [`ExitStatusKind::QemuFailed`] |
//! | a `fault` or `panic` record was seen | [`ExitStatusKind::Fault`] |
//! | a corrupt record line or a malformed record was seen | [`ExitStatusKind::ProtocolError`] |
//! | QEMU status 35 (kernel wrote `0x11` to `isa-debug-exit`) | [`ExitStatusKind::KernelFailed`] |
//! | QEMU status 33, no `end` record | [`ExitStatusKind::ProtocolError`] |
//! | QEMU status 33, `end` with status `fail`, or an `error` record | [`ExitStatusKind::KernelFailed`] |
//! | QEMU status 33, `end` with status `ok` | [`ExitStatusKind::Ok`] |
//! | QEMU status 0 (a triple fault resets the guest; `-no-reboot` turns that into exit 0) | [`ExitStatusKind::ProtocolError`] |
//! | any other status, or killed by a signal | [`ExitStatusKind::QemuFailed`] |

use std::fmt;

use crate::exit_code;

/// QEMU's exit status when the kernel writes `0x10` to `isa-debug-exit` (success).
pub const QEMU_STATUS_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel writes `0x11` to `isa-debug-exit` (failure).
pub const QEMU_STATUS_FAILURE: i32 = 35;

/// How a run ended, as written to `exit.status` in the JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatusKind {
    /// The kernel finished and reported success.
    Ok,
    /// The kernel reported failure (`error` record, `end` with `fail`, or a
    /// failure exit).
    KernelFailed,
    /// The kernel reported a CPU exception (`fault`) or a `panic`.
    Fault,
    /// The run did not finish before the timeout; QEMU was killed.
    Timeout,
    /// The kernel broke the serial protocol: no `end` record, a corrupt or
    /// malformed record, or a triple fault (QEMU status 0).
    ProtocolError,
    /// QEMU itself failed (its own error, exit status 1, or killed by a signal).
    QemuFailed,
}

impl ExitStatusKind {
    /// The spelling used in the JSON document's `exit.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitStatusKind::Ok => "ok",
            ExitStatusKind::KernelFailed => "kernel-failed",
            ExitStatusKind::Fault => "fault",
            ExitStatusKind::Timeout => "timeout",
            ExitStatusKind::ProtocolError => "protocol-error",
            ExitStatusKind::QemuFailed => "qemu-failed",
        }
    }

    /// The exit code of the `spindle` binary for this outcome (see [`crate::exit_code`]).
    pub fn exit_code(self) -> u8 {
        match self {
            ExitStatusKind::Ok => exit_code::OK,
            ExitStatusKind::KernelFailed | ExitStatusKind::Fault => exit_code::KERNEL_FAILED,
            ExitStatusKind::Timeout => exit_code::TIMEOUT,
            ExitStatusKind::ProtocolError => exit_code::PROTOCOL_ERROR,
            ExitStatusKind::QemuFailed => exit_code::QEMU_FAILED,
        }
    }
}

impl fmt::Display for ExitStatusKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The `status` field of the kernel's `end` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStatus {
    /// `"ok"`.
    Ok,
    /// `"fail"`.
    Fail,
    /// Anything else (kept for the message; treated as a protocol error).
    Other(String),
}

/// Everything the classification looks at.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The deadline passed and QEMU was killed.
    pub timed_out: bool,
    /// QEMU's exit status (`None` when it was killed by a signal or at the timeout).
    pub qemu_status: Option<i32>,
    /// The `end` record, if one arrived.
    pub end: Option<EndStatus>,
    /// A `hello` record arrived.
    pub hello_seen: bool,
    /// Messages of `error` records.
    pub errors: Vec<String>,
    /// One line per `fault` or `panic` record (`page fault (vector 14) on cpu 1 ...`,
    /// `panic on cpu 0 at src/main.rs:7: ...`).
    pub faults: Vec<String>,
    /// One line per protocol problem (corrupt line, malformed record).
    pub protocol_problems: Vec<String>,
    /// QEMU's first non-empty stderr line, if any (for messages).
    pub qemu_stderr_first_line: Option<String>,
    /// QEMU reported a fatal KVM error and was killed: the error line.
    pub kvm_fatal_error: Option<String>,
}

/// Decides the outcome of a run and a one-line reason (`None` for [`ExitStatusKind::Ok`]).
///
/// Timeouts are not classified here with their final message (the runner
/// words it with the timeout and the last kernel line); this returns a
/// generic one.
pub fn classify(observation: &Observation) -> (ExitStatusKind, Option<String>) {
    if observation.timed_out {
        return (
            ExitStatusKind::Timeout,
            Some("timed out; QEMU killed".to_string()),
        );
    }
    if let Some(error) = &observation.kvm_fatal_error {
        return (
            ExitStatusKind::QemuFailed,
            Some(format!(
                "KVM stopped the guest: {error}; QEMU killed (try --accel tcg)"
            )),
        );
    }
    if let Some(first) = observation.faults.first() {
        return (ExitStatusKind::Fault, Some(first.clone()));
    }
    if !observation.protocol_problems.is_empty() {
        let count = observation.protocol_problems.len();
        return (
            ExitStatusKind::ProtocolError,
            Some(format!(
                "{count} bad record line{} (first: {})",
                if count == 1 { "" } else { "s" },
                observation.protocol_problems[0]
            )),
        );
    }
    let error_suffix = || match observation.errors.first() {
        Some(message) => format!(": {message}"),
        None => String::new(),
    };
    match observation.qemu_status {
        Some(QEMU_STATUS_FAILURE) => (
            ExitStatusKind::KernelFailed,
            Some(format!(
                "kernel reported failure (QEMU exit status 35){}",
                error_suffix()
            )),
        ),
        Some(QEMU_STATUS_SUCCESS) => match &observation.end {
            None => (
                ExitStatusKind::ProtocolError,
                Some(
                    "QEMU exited with the success status but the kernel sent no end record"
                        .to_string(),
                ),
            ),
            Some(EndStatus::Other(status)) => (
                ExitStatusKind::ProtocolError,
                Some(format!("end record has unknown status {status:?}")),
            ),
            Some(EndStatus::Fail) => (
                ExitStatusKind::KernelFailed,
                Some(format!(
                    "kernel reported failure (end status fail){}",
                    error_suffix()
                )),
            ),
            Some(EndStatus::Ok) if !observation.errors.is_empty() => (
                ExitStatusKind::KernelFailed,
                Some(format!("kernel reported an error{}", error_suffix())),
            ),
            Some(EndStatus::Ok) => (ExitStatusKind::Ok, None),
        },
        Some(0) => (
            ExitStatusKind::ProtocolError,
            Some(
                "QEMU exited with status 0 without the kernel's exit \
                 (the guest reset: a triple fault under -no-reboot?)"
                    .to_string(),
            ),
        ),
        Some(status) => {
            let stderr = match &observation.qemu_stderr_first_line {
                Some(line) => format!(": {line}"),
                None => String::new(),
            };
            let when = if observation.hello_seen {
                ""
            } else {
                " before the kernel said hello"
            };
            (
                ExitStatusKind::QemuFailed,
                Some(format!(
                    "QEMU failed with exit status {status}{when}{stderr}"
                )),
            )
        }
        None => (
            ExitStatusKind::QemuFailed,
            Some("QEMU was killed by a signal".to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(qemu_status: Option<i32>, end: Option<EndStatus>) -> Observation {
        Observation {
            qemu_status,
            end,
            hello_seen: true,
            ..Observation::default()
        }
    }

    #[test]
    fn classification_table() {
        let fault = Observation {
            faults: vec!["page fault (vector 14) on cpu 1 at rip 0x1000".into()],
            ..observation(Some(35), None)
        };
        let triple_fault_after_fault = Observation {
            faults: vec!["panic on cpu 0".into()],
            ..observation(Some(0), None)
        };
        let corrupt = Observation {
            protocol_problems: vec!["bad checksum".into()],
            ..observation(Some(33), Some(EndStatus::Ok))
        };
        let error_record = Observation {
            errors: vec!["unknown kernel argument foo".into()],
            ..observation(Some(33), Some(EndStatus::Ok))
        };
        let timeout = Observation {
            timed_out: true,
            ..observation(None, None)
        };
        let kvm_error = Observation {
            kvm_fatal_error: Some("KVM internal error. Suberror: 1".into()),
            ..observation(None, None)
        };
        let cases: Vec<(&str, Observation, ExitStatusKind)> = vec![
            (
                "33 + end ok",
                observation(Some(33), Some(EndStatus::Ok)),
                ExitStatusKind::Ok,
            ),
            (
                "33 + end fail",
                observation(Some(33), Some(EndStatus::Fail)),
                ExitStatusKind::KernelFailed,
            ),
            (
                "33 + no end",
                observation(Some(33), None),
                ExitStatusKind::ProtocolError,
            ),
            (
                "33 + end with odd status",
                observation(Some(33), Some(EndStatus::Other("maybe".into()))),
                ExitStatusKind::ProtocolError,
            ),
            (
                "33 + error record",
                error_record,
                ExitStatusKind::KernelFailed,
            ),
            (
                "35 without fault",
                observation(Some(35), Some(EndStatus::Fail)),
                ExitStatusKind::KernelFailed,
            ),
            (
                "35 without end",
                observation(Some(35), None),
                ExitStatusKind::KernelFailed,
            ),
            ("35 + fault", fault, ExitStatusKind::Fault),
            (
                "0 after panic",
                triple_fault_after_fault,
                ExitStatusKind::Fault,
            ),
            (
                "0: triple fault",
                observation(Some(0), None),
                ExitStatusKind::ProtocolError,
            ),
            (
                "1: QEMU error",
                observation(Some(1), None),
                ExitStatusKind::QemuFailed,
            ),
            (
                "signal",
                observation(None, None),
                ExitStatusKind::QemuFailed,
            ),
            ("corrupt record", corrupt, ExitStatusKind::ProtocolError),
            ("timeout", timeout, ExitStatusKind::Timeout),
            ("KVM internal error", kvm_error, ExitStatusKind::QemuFailed),
        ];
        for (label, observation, expected) in cases {
            let (status, message) = classify(&observation);
            assert_eq!(status, expected, "{label}");
            assert_eq!(
                message.is_none(),
                expected == ExitStatusKind::Ok,
                "{label}: {message:?}"
            );
        }
    }

    #[test]
    fn exit_codes_and_spellings() {
        let table = [
            (ExitStatusKind::Ok, "ok", 0),
            (ExitStatusKind::KernelFailed, "kernel-failed", 1),
            (ExitStatusKind::Fault, "fault", 1),
            (ExitStatusKind::Timeout, "timeout", 4),
            (ExitStatusKind::ProtocolError, "protocol-error", 6),
            (ExitStatusKind::QemuFailed, "qemu-failed", 3),
        ];
        for (status, spelling, code) in table {
            assert_eq!(status.as_str(), spelling);
            assert_eq!(status.to_string(), spelling);
            assert_eq!(status.exit_code(), code);
        }
    }

    #[test]
    fn messages_carry_the_kernel_error() {
        let observation = Observation {
            errors: vec!["unknown argument bogus=1".into()],
            ..observation(Some(35), Some(EndStatus::Fail))
        };
        let (_, message) = classify(&observation);
        assert!(message.unwrap().contains("unknown argument bogus=1"));
    }
}
