//! spindle-tools: build the Spindle kernel, boot it under QEMU, decode its serial records.
//!
//! `cargo spindle run` (the `spindle` binary) is a thin shell over [`run`];
//! integration tests call the library directly.
//!
//! # A run
//!
//! 1. The kernel image is `--kernel PATH`, or built with [`build_kernel`].
//! 2. QEMU is `--qemu PATH`, else `$SPINDLE_QEMU`, else `qemu-system-x86_64`
//!    on `PATH`. When it is missing, not named explicitly, and the runner is
//!    root and non-interactive (stdin not a terminal, or `CI=true`), the
//!    runner installs it with `apt-get update` and
//!    `apt-get install -y qemu-system-x86` and retries once.
//! 3. The accelerator: `--accel auto` uses KVM when `/dev/kvm` opens
//!    read+write, else TCG; if QEMU then fails to start KVM (it exits without
//!    a `hello` record and its stderr mentions KVM), or KVM later stops the
//!    guest with a fatal error (`KVM internal error`, which QEMU answers by
//!    pausing the guest forever; the runner kills QEMU at once), the runner
//!    prints one notice (`spindle: KVM failed (...); falling back to TCG`)
//!    and boots again with TCG. `--accel kvm` without a usable KVM is an
//!    error; a fatal KVM error under `--accel kvm` fails the run (exit 3)
//!    without waiting for the timeout.
//! 4. QEMU runs with this fixed command line (see [`qemu`]):
//!
//!    ```text
//!    qemu-system-x86_64 -machine q35
//!        -accel kvm -cpu host,-arch-capabilities        (KVM)
//!        -accel tcg,thread=multi -cpu max               (TCG)
//!        -smp N -m MiB -nodefaults -display none -no-reboot
//!        -device isa-debug-exit,iobase=0xf4,iosize=0x04
//!        -chardev stdio,id=serial0,signal=off -serial chardev:serial0
//!        -kernel IMAGE -append "ARGS"
//!    ```
//!
//!    `ARGS` is `--append`, then `bench=NAMES` when `--bench` is given.
//! 5. QEMU's stdout (COM1) is read as it arrives: human lines are echoed
//!    (unless quiet), `@sp1` records are decoded ([`document`]), corrupt
//!    lines are reported on stderr at once. At the timeout QEMU is killed;
//!    QEMU is killed on every other exit path too (a drop guard).
//! 6. The run is classified ([`outcome`]) and the JSON document of
//!    `docs/serial-protocol.md` is built.
//!
//! # Exit codes of the `spindle` binary
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok: QEMU status 33 and an `end` record with status `ok` |
//! | 1 | the kernel reported failure: an `error`, `fault` or `panic` record, `end` with `fail`, or QEMU status 35 |
//! | 2 | usage error: bad arguments (clap), a `--kernel` image that does not exist, an `--input` file that cannot be read, a `--json`/`--hgrm` path that cannot be written |
//! | 3 | QEMU missing, failed to start, or failed (its own error, killed by a signal), or `--accel kvm` without KVM |
//! | 4 | timeout: QEMU was killed at `--timeout` |
//! | 5 | the kernel build failed |
//! | 6 | protocol error: no `end` record, corrupt or malformed records, a triple fault (QEMU status 0) |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod document;
pub mod error;
pub mod hgrm;
pub mod kernel_build;
pub mod listing;
pub mod outcome;
pub mod output;
pub mod qemu;
pub mod record_writer;
pub mod runner;

pub use document::{HistogramSummary, ProtocolProblem};
pub use error::RunError;
pub use kernel_build::build_kernel;
pub use outcome::ExitStatusKind;
pub use qemu::{Accel, AccelChoice, KvmProbe, Topology};
pub use runner::{run, RunOptions, RunReport};

/// Exit codes of the `spindle` binary (see the crate documentation).
pub mod exit_code {
    /// The kernel finished and reported success.
    pub const OK: u8 = 0;
    /// The kernel reported failure (`error`/`fault`/`panic` record or failure exit).
    pub const KERNEL_FAILED: u8 = 1;
    /// Usage error (clap's default for bad arguments; also unusable paths).
    pub const USAGE: u8 = 2;
    /// QEMU missing, failed to start, or failed.
    pub const QEMU_FAILED: u8 = 3;
    /// QEMU was killed at the timeout.
    pub const TIMEOUT: u8 = 4;
    /// The kernel build failed.
    pub const BUILD_FAILED: u8 = 5;
    /// Protocol error (no `end` record, corrupt records, triple fault).
    pub const PROTOCOL_ERROR: u8 = 6;
}
