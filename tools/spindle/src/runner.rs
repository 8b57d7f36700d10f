//! One run: choose the kernel, QEMU and accelerator, boot, decode, classify.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use spindle_records::{Line, LineAssembler};

use crate::document::{exit_section, HistogramSummary, ProtocolProblem, RecordCollector};
use crate::error::RunError;
use crate::kernel_build::build_kernel;
use crate::outcome::{classify, ExitStatusKind, QEMU_STATUS_FAILURE, QEMU_STATUS_SUCCESS};
use crate::qemu::{
    self, qemu_arguments, supervise, Accel, AccelChoice, KvmProbe, QemuProgram, Supervised,
    Topology,
};

/// The largest `--smp` the runner accepts.
pub const MAX_SMP: u32 = 255;

/// Everything a run needs. Build it with struct update syntax so new
/// options (which always get a default) do not break callers:
///
/// ```
/// let options = spindle_tools::RunOptions { smp: 4, ..Default::default() };
/// assert_eq!(options.memory_mib, 512);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Number of virtual CPUs (`-smp`), 1..=255. Default 2.
    pub smp: u32,
    /// How the CPUs are arranged in sockets, cores and threads; `None`
    /// (default) lets QEMU choose. Its CPU count must equal `smp`.
    pub topology: Option<Topology>,
    /// Accelerator choice. Default [`AccelChoice::Auto`].
    pub accel: AccelChoice,
    /// Guest memory in MiB (`-m`). Default 512.
    pub memory_mib: u32,
    /// Extra kernel arguments (`key=value` words), passed first on the kernel command line.
    pub append: String,
    /// Benchmarks to run (comma list), passed to the kernel as `bench=NAMES`.
    pub bench: Option<String>,
    /// Wall-clock limit for QEMU; at the deadline QEMU is killed. Default 120 s.
    pub timeout: Duration,
    /// A prebuilt kernel image; `None` builds the kernel with [`build_kernel`].
    pub kernel: Option<PathBuf>,
    /// The QEMU binary; `None` uses `$SPINDLE_QEMU`, else `qemu-system-x86_64` on `PATH`.
    pub qemu: Option<PathBuf>,
    /// Echo the kernel's human log lines on stdout as they arrive. Default true.
    pub echo: bool,
    /// How `--accel auto`/`kvm` decide whether KVM is usable. Default: open `/dev/kvm`.
    pub kvm_probe: KvmProbe,
    /// Bytes sent to the kernel's serial console (COM1 input, QEMU's stdin),
    /// then end of input; `None` (default) gives QEMU `/dev/null` as stdin.
    pub serial_input: Option<Vec<u8>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            smp: 2,
            topology: None,
            accel: AccelChoice::Auto,
            memory_mib: 512,
            append: String::new(),
            bench: None,
            timeout: Duration::from_secs(120),
            kernel: None,
            qemu: None,
            echo: true,
            kvm_probe: KvmProbe::OpenDevice,
            serial_input: None,
        }
    }
}

impl RunOptions {
    /// The kernel command line: `append`, then `bench=NAMES` when `bench` is set.
    pub fn kernel_arguments(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        let append = self.append.trim();
        if !append.is_empty() {
            words.push(append.to_string());
        }
        if let Some(bench) = &self.bench {
            words.push(format!("bench={bench}"));
        }
        words.join(" ")
    }

    fn validate(&self) -> Result<(), RunError> {
        let invalid = |detail: String| Err(RunError::InvalidOption { detail });
        if !(1..=MAX_SMP).contains(&self.smp) {
            return invalid(format!("smp must be 1..={MAX_SMP}, not {}", self.smp));
        }
        if let Some(topology) = self.topology {
            if topology.cpus() != self.smp {
                return invalid(format!(
                    "topology {}x{}x{} has {} CPUs, but smp is {}",
                    topology.sockets,
                    topology.cores,
                    topology.threads,
                    topology.cpus(),
                    self.smp
                ));
            }
        }
        if self.memory_mib == 0 {
            return invalid("memory must be at least 1 MiB".into());
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be positive".into());
        }
        Ok(())
    }
}

/// The result of a run that reached QEMU (whatever the kernel did).
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How the run ended.
    pub status: ExitStatusKind,
    /// Why the run failed, one line without the `spindle: ` prefix (`None` when [`ExitStatusKind::Ok`]).
    pub message: Option<String>,
    /// QEMU's exit status (`None` when it was killed).
    pub qemu_status: Option<i32>,
    /// The accelerator of the (last) QEMU run.
    pub accel: Accel,
    /// When `--accel auto` fell back from KVM to TCG: QEMU's first stderr line from the KVM attempt.
    pub kvm_fallback: Option<String>,
    /// The JSON document of `docs/serial-protocol.md`.
    pub document: Value,
    /// The histograms of the document, with their rebuilt hdrhistograms.
    pub histograms: Vec<HistogramSummary>,
    /// Corrupt lines and malformed records (any makes the run a protocol error).
    pub problems: Vec<ProtocolProblem>,
    /// Everything the kernel printed on the serial line (lossy UTF-8).
    pub serial_log: String,
    /// Everything QEMU printed on stderr.
    pub qemu_stderr: String,
    /// The QEMU command: program, then arguments.
    pub qemu_command: Vec<OsString>,
    /// The kernel image that was booted.
    pub kernel: PathBuf,
    /// Wall-clock time of the QEMU run.
    pub wall: Duration,
}

/// One QEMU process and what it printed.
struct Attempt {
    accel: Accel,
    command: Vec<OsString>,
    supervised: Supervised,
    collector: RecordCollector,
    serial_log: String,
}

/// Boots the kernel under QEMU and reports what happened; see the crate
/// documentation for the command line, fallback and classification rules.
///
/// Errors are for runs that could not start (build failure, QEMU missing,
/// `--accel kvm` without KVM); everything after QEMU started is a
/// [`RunReport`].
pub fn run(options: &RunOptions) -> Result<RunReport, RunError> {
    options.validate()?;
    let kernel = match &options.kernel {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => return Err(RunError::KernelMissing { path: path.clone() }),
        None => build_kernel()?,
    };
    let program = find_or_install_qemu(options.qemu.as_deref())?;
    let accel = match options.accel {
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::TcgIcount => Accel::TcgIcount,
        AccelChoice::Kvm => {
            options
                .kvm_probe
                .check()
                .map_err(|reason| RunError::KvmUnavailable { reason })?;
            Accel::Kvm
        }
        AccelChoice::Auto => match options.kvm_probe.check() {
            Ok(()) => Accel::Kvm,
            Err(_) => Accel::Tcg,
        },
    };

    if accel == Accel::TcgIcount && options.smp > 1 {
        eprintln!(
            "spindle: warning: tcg-icount runs the {} virtual CPUs in turn on one host thread; \
             QEMU 7.2 was seen to deliver no ticks to a busy CPU other than CPU 0 there, \
             so its figures are meant for --smp 1",
            options.smp
        );
    }
    let mut attempt = boot(options, &program, &kernel, accel)?;
    let mut kvm_fallback = None;
    if options.accel == AccelChoice::Auto && accel == Accel::Kvm {
        if let Some(reason) = kvm_failure(&attempt) {
            eprintln!("spindle: KVM failed ({reason}); falling back to TCG");
            attempt = boot(options, &program, &kernel, Accel::Tcg)?;
            kvm_fallback = Some(reason);
        }
    }
    Ok(report(options, attempt, kernel, kvm_fallback))
}

/// Finds QEMU; when it is missing and was not named explicitly, installs it
/// with apt-get if running as root without a terminal (or with `CI=true`).
fn find_or_install_qemu(explicit: Option<&Path>) -> Result<PathBuf, RunError> {
    let choice = QemuProgram::choose(explicit);
    if let Some(path) = choice.resolve() {
        return Ok(path);
    }
    let missing = RunError::QemuMissing {
        program: choice.program.clone(),
    };
    if !(choice.is_default && qemu::running_as_root() && qemu::non_interactive()) {
        return Err(missing);
    }
    eprintln!(
        "spindle: {} not found; installing it (apt-get update && apt-get install -y qemu-system-x86)",
        choice.program.display()
    );
    qemu::install_qemu()?;
    choice.resolve().ok_or(missing)
}

/// Runs QEMU once with `accel`.
fn boot(
    options: &RunOptions,
    program: &Path,
    kernel: &Path,
    accel: Accel,
) -> Result<Attempt, RunError> {
    let arguments = qemu_arguments(
        accel,
        options.smp,
        options.topology,
        options.memory_mib,
        kernel,
        &options.kernel_arguments(),
    );
    let mut assembler = LineAssembler::new();
    let mut collector = RecordCollector::new();
    let mut serial = Vec::new();
    let serial_input = options.serial_input.as_deref();
    let supervised = supervise(
        program,
        &arguments,
        options.timeout,
        serial_input,
        |bytes| {
            serial.extend_from_slice(bytes);
            for line in assembler.push(bytes) {
                take_line(&mut collector, line, options.echo);
            }
        },
    )?;
    if let Some(line) = assembler.finish() {
        take_line(&mut collector, line, options.echo);
    }
    let mut command = vec![program.as_os_str().to_owned()];
    command.extend(arguments);
    Ok(Attempt {
        accel,
        command,
        supervised,
        collector,
        serial_log: String::from_utf8_lossy(&serial).into_owned(),
    })
}

/// Echoes a human line (when asked) and records everything else; a protocol
/// problem is reported on stderr at once.
fn take_line(collector: &mut RecordCollector, line: Line, echo: bool) {
    if let (Line::Human(text), true) = (&line, echo) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) must not stop the run.
        let _ = writeln!(stdout, "{text}");
    }
    if let Some(problem) = collector.observe(&line) {
        eprintln!("spindle: protocol error: {problem}");
    }
}

/// Why a KVM attempt failed because of KVM rather than the kernel, if it did:
///
/// * QEMU failed to start KVM: it exited before the kernel's `hello`, not
///   with the kernel's own exit status, and its stderr mentions KVM (the
///   reason is QEMU's first stderr line);
/// * KVM stopped the guest later with a fatal error (`KVM internal error`,
///   e.g. an instruction nested KVM cannot emulate); QEMU was killed.
fn kvm_failure(attempt: &Attempt) -> Option<String> {
    let supervised = &attempt.supervised;
    if let Some(error) = &supervised.kvm_fatal_error {
        return Some(error.clone());
    }
    if supervised.timed_out
        || attempt.collector.hello_seen()
        || matches!(
            supervised.qemu_status,
            Some(QEMU_STATUS_SUCCESS | QEMU_STATUS_FAILURE)
        )
        || !supervised.stderr.to_ascii_lowercase().contains("kvm")
    {
        return None;
    }
    first_line(&supervised.stderr)
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_string)
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .rev()
        .find(|line| !line.is_empty())
        .map(str::to_string)
}

/// Formats a duration in seconds the way people type them (`120`, `0.5`).
fn seconds(duration: Duration) -> String {
    format!("{}", duration.as_secs_f64())
}

fn report(
    options: &RunOptions,
    attempt: Attempt,
    kernel: PathBuf,
    kvm_fallback: Option<String>,
) -> RunReport {
    let Attempt {
        accel,
        command,
        supervised,
        collector,
        serial_log,
    } = attempt;
    let mut observation = collector.observation();
    observation.timed_out = supervised.timed_out;
    observation.qemu_status = supervised.qemu_status;
    observation.qemu_stderr_first_line = first_line(&supervised.stderr);
    observation.kvm_fatal_error = supervised.kvm_fatal_error.clone();
    let mut problems = collector.problems().to_vec();
    let histograms = match collector.histogram_summaries() {
        Ok(histograms) => histograms,
        Err(detail) => {
            observation.protocol_problems.push(detail.clone());
            problems.push(ProtocolProblem::BadRecord {
                line_number: 0,
                record_type: "hist".into(),
                detail,
            });
            Vec::new()
        }
    };
    let (status, mut message) = classify(&observation);
    if status == ExitStatusKind::Timeout {
        let last = last_line(&serial_log).unwrap_or_else(|| "(none)".into());
        message = Some(format!(
            "timed out after {} s; QEMU killed (last line from the kernel: {last})",
            seconds(options.timeout)
        ));
    }
    let exit = exit_section(status, supervised.qemu_status, supervised.wall);
    let document = collector.document(&histograms, accel, options.smp, &exit);
    RunReport {
        status,
        message,
        qemu_status: supervised.qemu_status,
        accel,
        kvm_fallback,
        document,
        histograms,
        problems,
        serial_log,
        qemu_stderr: supervised.stderr,
        qemu_command: command,
        kernel,
        wall: supervised.wall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let options = RunOptions::default();
        assert_eq!(options.smp, 2);
        assert_eq!(options.accel, AccelChoice::Auto);
        assert_eq!(options.memory_mib, 512);
        assert_eq!(options.timeout, Duration::from_secs(120));
        assert!(options.echo);
        assert_eq!(options.kernel_arguments(), "");
    }

    #[test]
    fn kernel_arguments_append_then_bench() {
        let options = RunOptions {
            append: " log=debug  ".into(),
            bench: Some("ipi,timer".into()),
            ..RunOptions::default()
        };
        assert_eq!(options.kernel_arguments(), "log=debug bench=ipi,timer");
        let only_bench = RunOptions {
            bench: Some("ipi".into()),
            ..RunOptions::default()
        };
        assert_eq!(only_bench.kernel_arguments(), "bench=ipi");
    }

    #[test]
    fn invalid_options_are_refused() {
        for options in [
            RunOptions {
                smp: 0,
                ..RunOptions::default()
            },
            RunOptions {
                smp: 256,
                ..RunOptions::default()
            },
            RunOptions {
                memory_mib: 0,
                ..RunOptions::default()
            },
            RunOptions {
                timeout: Duration::ZERO,
                ..RunOptions::default()
            },
        ] {
            assert!(
                matches!(run(&options), Err(RunError::InvalidOption { .. })),
                "{options:?}"
            );
        }
    }

    #[test]
    fn seconds_are_printed_plainly() {
        assert_eq!(seconds(Duration::from_secs(120)), "120");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5");
    }

    #[test]
    fn first_and_last_lines() {
        assert_eq!(
            first_line("\n  qemu: kvm broken\nmore\n"),
            Some("qemu: kvm broken".into())
        );
        assert_eq!(last_line("a\nb\n\n"), Some("b".into()));
        assert_eq!(last_line(""), None);
    }
}
