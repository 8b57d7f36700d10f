//! The runner's error type: everything that stops a run before it has a result.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit_code;

/// Why [`crate::run`] or [`crate::build_kernel`] could not produce a result.
///
/// A run that reached QEMU always produces a [`crate::RunReport`], even when
/// the kernel failed or timed out; these errors are for the cases where there
/// is nothing to report. `Display` gives a one-line message without the
/// `spindle: ` prefix (the binary adds it).
#[derive(Debug)]
pub enum RunError {
    /// `cargo build` for the kernel could not be started or failed.
    Build {
        /// cargo's exit status (`None`: it could not be started or was killed).
        status: Option<i32>,
        /// What went wrong, for people.
        detail: String,
    },
    /// The QEMU binary could not be found.
    QemuMissing {
        /// The program that was looked for (a name searched on `PATH`, or a path).
        program: PathBuf,
    },
    /// Installing QEMU with apt-get failed.
    QemuInstall {
        /// The command that failed, as typed.
        command: String,
        /// Its exit status (`None`: it could not be started or was killed).
        status: Option<i32>,
    },
    /// QEMU was found but could not be started.
    QemuSpawn {
        /// The QEMU binary.
        program: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// `--accel kvm` was requested but `/dev/kvm` cannot be used.
    KvmUnavailable {
        /// Why (the error from opening `/dev/kvm`).
        reason: String,
    },
    /// The kernel image given with `--kernel` does not exist.
    KernelMissing {
        /// The path that was given.
        path: PathBuf,
    },
    /// An option value is out of range (the CLI rejects these before; this
    /// catches library callers).
    InvalidOption {
        /// Which option and why.
        detail: String,
    },
    /// Reading or writing a file failed (e.g. `--json FILE`).
    Io {
        /// What the runner was doing.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
}

impl RunError {
    /// The exit code the `spindle` binary uses for this error (see
    /// [`crate::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Build { .. } => exit_code::BUILD_FAILED,
            RunError::QemuMissing { .. }
            | RunError::QemuInstall { .. }
            | RunError::QemuSpawn { .. }
            | RunError::KvmUnavailable { .. } => exit_code::QEMU_FAILED,
            RunError::KernelMissing { .. }
            | RunError::InvalidOption { .. }
            | RunError::Io { .. } => exit_code::USAGE,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Build { status, detail } => match status {
                Some(code) => write!(formatter, "kernel build failed (cargo exit status {code}): {detail}"),
                None => write!(formatter, "kernel build failed: {detail}"),
            },
            RunError::QemuMissing { program } => {
                if program.components().count() > 1 {
                    write!(formatter, "{} not found; install QEMU with: apt-get install -y qemu-system-x86, or pass --qemu PATH", program.display())
                } else {
                    write!(formatter, "{} not found; install it with: apt-get install -y qemu-system-x86", program.display())
                }
            }
            RunError::QemuInstall { command, status } => match status {
                Some(code) => write!(formatter, "installing QEMU failed: `{command}` exited with status {code}"),
                None => write!(formatter, "installing QEMU failed: `{command}` could not be run"),
            },
            RunError::QemuSpawn { program, source } => {
                write!(formatter, "could not start {}: {source}", program.display())
            }
            RunError::KvmUnavailable { reason } => write!(
                formatter,
                "--accel kvm: KVM is not usable ({reason}); use --accel tcg, or --accel auto to fall back"
            ),
            RunError::KernelMissing { path } => {
                write!(formatter, "kernel image {} does not exist", path.display())
            }
            RunError::InvalidOption { detail } => write!(formatter, "invalid option: {detail}"),
            RunError::Io { context, source } => write!(formatter, "{context}: {source}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::QemuSpawn { source, .. } | RunError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
