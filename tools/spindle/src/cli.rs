//! The `spindle` command line (clap derive) and its translation into [`RunOptions`].
//!
//! To add a `run` option: add a field to [`RunArguments`] with a doc comment
//! (it becomes the `--help` text), add the matching field with a default to
//! [`RunOptions`], and set it in [`RunArguments::to_run_options`].

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::RunError;
use crate::qemu::{AccelChoice, KvmProbe, Topology};
use crate::runner::{RunOptions, MAX_SMP};

/// Environment variable that replaces the `/dev/kvm` probe: `1` = KVM usable,
/// `0` = not usable (for testing the fallback path).
pub const FORCE_KVM_PROBE_VARIABLE: &str = "SPINDLE_FORCE_KVM_PROBE";

/// The text after `spindle run --help`: the QEMU command, environment, exit codes.
const RUN_AFTER_HELP: &str = "\
QEMU command line (fixed):
  qemu-system-x86_64 -machine q35
      -accel kvm -cpu host,-arch-capabilities      (KVM)
      -accel tcg,thread=multi -cpu max             (TCG)
      -accel tcg,thread=single -icount shift=0 -cpu max   (tcg-icount)
      -smp N -m MiB -nodefaults -display none -no-reboot
      -device isa-debug-exit,iobase=0xf4,iosize=0x04
      -chardev stdio,id=serial0,signal=off -serial chardev:serial0
      -kernel IMAGE -append \"ARGS\"
  ARGS is --append, then bench=NAMES when --bench is given. COM1 is QEMU's
  stdout; human lines are echoed, `@sp1` records are decoded
  (docs/serial-protocol.md).

Environment:
  SPINDLE_QEMU             QEMU binary when --qemu is not given
  SPINDLE_FORCE_KVM_PROBE  1 or 0: skip the /dev/kvm probe and assume KVM is
                           (not) usable (for testing the fallback)
  CI=true                  counts as non-interactive (see below)

If qemu-system-x86_64 is missing and the runner is root and non-interactive
(stdin not a terminal, or CI=true), it runs `apt-get update` and
`apt-get install -y qemu-system-x86`, then retries once.

Exit codes:
  0  ok: the kernel finished and reported success
  1  the kernel reported failure (error, fault or panic record, or failure exit)
  2  usage error (bad arguments, a --kernel/--input/--json/--hgrm path that
     cannot be used)
  3  QEMU missing, failed to start, or failed (including --accel kvm without KVM)
  4  timeout: QEMU was killed at --timeout
  5  kernel build failed
  6  protocol error (no end record, corrupt records, triple fault)";

const TOP_AFTER_HELP: &str = "\
Exit codes: 0 ok; 1 kernel reported failure; 2 usage error; 3 QEMU missing or
failed; 4 timeout; 5 kernel build failed; 6 protocol error.
See `spindle run --help` for the QEMU command line and details.";

/// Spindle's runner: builds the kernel and boots it under QEMU.
#[derive(Debug, Parser)]
#[command(name = "spindle", version, after_long_help = TOP_AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Build the kernel (unless --kernel is given), boot it under QEMU, decode
    /// its records, print a summary.
    ///
    /// Human log lines from the kernel are echoed as they arrive; after the run
    /// a summary (CPUs, APIC mode, accelerator, TSC frequency, boot time) and a
    /// percentile table of every histogram are printed, then `spindle: ok` or
    /// the failure.
    #[command(after_long_help = RUN_AFTER_HELP)]
    Run(Box<RunArguments>),
    /// Build the kernel image and print its path.
    ///
    /// Runs `cargo build --release -p spindle-kernel --target
    /// x86_64-unknown-none` in the workspace root. Exit code 5 when the build
    /// fails.
    Build,
    /// List the extensions compiled into the kernel, one line each: the
    /// scheduling policies (`--append sched=NAME`) and the other extensions
    /// (`--append extensions=NAME`).
    List,
}

/// Options of `spindle run`.
#[derive(Debug, Clone, Args)]
pub struct RunArguments {
    /// Number of virtual CPUs (1..=255).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SMP)))]
    pub smp: u32,

    /// CPU topology as SOCKETSxCORESxTHREADS (e.g. 2x3x1); the product must
    /// equal --smp. QEMU then numbers APIC IDs with gaps (2x3x1: 0,1,2,4,5,6).
    #[arg(long, value_name = "SxCxT")]
    pub topology: Option<Topology>,

    /// Accelerator: `kvm`, `tcg`, `tcg-icount`, or `auto` (KVM when /dev/kvm
    /// can be opened read+write, else TCG; if QEMU then fails to start KVM, or
    /// KVM stops the guest with an internal error, one notice is printed and
    /// the run is repeated with TCG). `tcg-icount` runs TCG at one
    /// instruction per virtual nanosecond: every "ns" figure is then an
    /// instruction count, identical from run to run (for comparing code
    /// paths on a noisy host, not for timing).
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,

    /// Guest memory in MiB (16..=1048576).
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub memory: u32,

    /// Extra kernel arguments, `key=value` words separated by spaces
    /// (`key="a b"` quotes a value); unknown keys make the kernel fail.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub append: String,

    /// Benchmarks to run, a comma-separated list of names; passed to the kernel
    /// as `bench=NAMES`.
    #[arg(long, value_name = "NAMES", value_parser = parse_bench_list)]
    pub bench: Option<String>,

    /// The scheduling policy to start with (`cargo spindle list` shows them);
    /// passed to the kernel as `sched=NAME`.
    #[arg(long, value_name = "NAME", value_parser = parse_policy_name)]
    pub sched: Option<String>,

    /// Live swaps: `NAME@TIME,...` (e.g. `edf@100ms,central@200ms`), each
    /// TIME counted from the creation of the first strand; passed to the
    /// kernel as `swap=LIST`.
    #[arg(long, value_name = "LIST", value_parser = parse_swap_list)]
    pub swap: Option<String>,

    /// Wall-clock limit in seconds; at the deadline QEMU is killed and the run
    /// fails with exit code 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Write the JSON document (docs/serial-protocol.md) to FILE, pretty-printed.
    /// Written for failed runs too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write one HdrHistogram percentile-distribution file per histogram to DIR
    /// (created if missing), named after the histogram: `NAME.hgrm`.
    #[arg(long, value_name = "DIR")]
    pub hgrm: Option<PathBuf>,

    /// Boot this prebuilt kernel image instead of building the kernel.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// The QEMU binary [default: $SPINDLE_QEMU, else qemu-system-x86_64 on PATH].
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,

    /// Do not echo the kernel's human log lines (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,

    /// Send the contents of FILE to the kernel's serial console (COM1 input),
    /// then end of input (for the kernel's `read_lines=N`). Without it the
    /// kernel's console input is empty.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

impl RunArguments {
    /// The library options for these arguments (`SPINDLE_FORCE_KVM_PROBE`
    /// included; `--input FILE` is read here).
    pub fn to_run_options(&self) -> Result<RunOptions, RunError> {
        let serial_input = match &self.input {
            Some(path) => Some(fs::read(path).map_err(|source| RunError::Io {
                context: format!("reading --input {}", path.display()),
                source,
            })?),
            None => None,
        };
        Ok(RunOptions {
            smp: self.smp,
            topology: self.topology,
            accel: self.accel,
            memory_mib: self.memory,
            append: self.kernel_append(),
            bench: self.bench.clone(),
            timeout: Duration::from_secs(self.timeout),
            kernel: self.kernel.clone(),
            qemu: self.qemu.clone(),
            echo: !self.quiet,
            kvm_probe: kvm_probe_from_environment(
                std::env::var(FORCE_KVM_PROBE_VARIABLE).ok().as_deref(),
            ),
            serial_input,
        })
    }
}

impl RunArguments {
    /// `--append`, followed by `sched=` and `swap=` for `--sched` and `--swap`.
    fn kernel_append(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if !self.append.trim().is_empty() {
            words.push(self.append.trim().to_string());
        }
        if let Some(sched) = &self.sched {
            words.push(format!("sched={sched}"));
        }
        if let Some(swap) = &self.swap {
            words.push(format!("swap={swap}"));
        }
        words.join(" ")
    }
}

/// Accepts the name of a policy in the sched-ext catalogue.
fn parse_policy_name(text: &str) -> Result<String, String> {
    if spindle_sched_ext::find(text).is_some() {
        Ok(text.to_string())
    } else {
        let known: Vec<&str> = spindle_sched_ext::catalogue()
            .iter()
            .map(|policy| policy.name)
            .collect();
        Err(format!(
            "unknown policy {text:?}; known: {}",
            known.join(", ")
        ))
    }
}

/// Accepts `NAME@TIME[,NAME@TIME...]`: known policy names, and times of
/// digits followed by a unit (`ns`, `us`, `ms`, `s`).
fn parse_swap_list(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the list is empty".into());
    }
    for entry in text.split(',') {
        let (name, time) = entry
            .split_once('@')
            .ok_or_else(|| format!("{entry:?} is not NAME@TIME (e.g. edf@100ms)"))?;
        parse_policy_name(name)?;
        let digits = time.chars().take_while(char::is_ascii_digit).count();
        let unit = &time[digits..];
        if digits == 0 || !["ns", "us", "ms", "s"].contains(&unit) {
            return Err(format!(
                "{time:?} in {entry:?} is not a time such as 100ms (units: ns, us, ms, s)"
            ));
        }
    }
    Ok(text.to_string())
}

/// The KVM probe for a value of `SPINDLE_FORCE_KVM_PROBE`: `1` and `0` force
/// the answer; anything else (or unset) opens `/dev/kvm`.
pub fn kvm_probe_from_environment(value: Option<&str>) -> KvmProbe {
    match value.map(str::trim) {
        Some("1") => KvmProbe::Assume { available: true },
        Some("0") => KvmProbe::Assume { available: false },
        _ => KvmProbe::OpenDevice,
    }
}

/// Accepts `name[,name...]` with names of ASCII letters, digits, `_`, `-`, `.`.
fn parse_bench_list(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the list is empty".into());
    }
    for name in text.split(',') {
        if name.is_empty() {
            return Err(format!("empty name in {text:?}"));
        }
        if let Some(bad) = name
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "{name:?} contains {bad:?}; names are letters, digits, '_', '-' and '.'"
            ));
        }
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sched_and_swap_become_kernel_arguments() {
        let options = run_arguments(&[
            "run",
            "--append",
            "selftest=strands",
            "--sched",
            "stride",
            "--swap",
            "edf@100ms,central@200ms",
        ])
        .to_run_options()
        .unwrap();
        assert_eq!(
            options.kernel_arguments(),
            "selftest=strands sched=stride swap=edf@100ms,central@200ms"
        );
    }

    #[test]
    fn unknown_policies_and_malformed_swaps_are_usage_errors() {
        for arguments in [
            &["run", "--sched", "fifo"][..],
            &["run", "--swap", "edf"],
            &["run", "--swap", "edf@100"],
            &["run", "--swap", "edf@100ms,nope@1s"],
            &["run", "--swap", "edf@fast"],
        ] {
            assert!(parse(arguments).is_err(), "{arguments:?} was accepted");
        }
    }

    use super::*;
    use clap::error::ErrorKind;

    fn parse(arguments: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("spindle").chain(arguments.iter().copied()))
    }

    fn run_arguments(arguments: &[&str]) -> RunArguments {
        match parse(arguments).unwrap().command {
            CliCommand::Run(run) => *run,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let arguments = run_arguments(&["run"]);
        assert_eq!(arguments.smp, 2);
        assert_eq!(arguments.accel, AccelChoice::Auto);
        assert_eq!(arguments.memory, 512);
        assert_eq!(arguments.append, "");
        assert_eq!(arguments.bench, None);
        assert_eq!(arguments.timeout, 120);
        assert!(arguments.json.is_none() && arguments.hgrm.is_none());
        assert!(arguments.kernel.is_none() && arguments.qemu.is_none());
        assert!(!arguments.quiet);
        let options = arguments.to_run_options().unwrap();
        let defaults = RunOptions::default();
        assert_eq!(options.smp, defaults.smp);
        assert_eq!(options.memory_mib, defaults.memory_mib);
        assert_eq!(options.timeout, defaults.timeout);
        assert!(options.echo);
    }

    #[test]
    fn run_with_everything() {
        let arguments = run_arguments(&[
            "run",
            "--smp",
            "8",
            "--accel",
            "tcg",
            "--memory",
            "1024",
            "--append",
            "log=debug x=\"a b\"",
            "--bench",
            "ipi,timer",
            "--timeout",
            "30",
            "--json",
            "out.json",
            "--hgrm",
            "hgrm",
            "--kernel",
            "/tmp/kernel",
            "--qemu",
            "/opt/qemu",
            "--quiet",
        ]);
        let options = arguments.to_run_options().unwrap();
        assert_eq!(options.smp, 8);
        assert_eq!(options.accel, AccelChoice::Tcg);
        assert_eq!(options.memory_mib, 1024);
        assert_eq!(options.append, "log=debug x=\"a b\"");
        assert_eq!(options.bench.as_deref(), Some("ipi,timer"));
        assert_eq!(options.timeout, Duration::from_secs(30));
        assert_eq!(options.kernel, Some(PathBuf::from("/tmp/kernel")));
        assert_eq!(options.qemu, Some(PathBuf::from("/opt/qemu")));
        assert!(!options.echo);
        assert_eq!(arguments.json, Some(PathBuf::from("out.json")));
        assert_eq!(arguments.hgrm, Some(PathBuf::from("hgrm")));
        assert_eq!(
            options.kernel_arguments(),
            "log=debug x=\"a b\" bench=ipi,timer"
        );
        assert!(run_arguments(&["run", "-q"]).quiet);
        assert_eq!(
            run_arguments(&["run", "--accel", "kvm"]).accel,
            AccelChoice::Kvm
        );
    }

    #[test]
    fn input_file_is_read_into_the_options() {
        let path = std::env::temp_dir().join(format!("spindle-cli-input-{}", std::process::id()));
        std::fs::write(&path, b"hello kernel\n").unwrap();
        let options = run_arguments(&["run", "--input", path.to_str().unwrap()])
            .to_run_options()
            .unwrap();
        assert_eq!(
            options.serial_input.as_deref(),
            Some(&b"hello kernel\n"[..])
        );
        std::fs::remove_file(&path).unwrap();
        let missing = run_arguments(&["run", "--input", "/nonexistent/input"]).to_run_options();
        assert_eq!(missing.unwrap_err().exit_code(), 2);
        assert_eq!(
            run_arguments(&["run"])
                .to_run_options()
                .unwrap()
                .serial_input,
            None
        );
    }

    #[test]
    fn append_may_start_with_a_dash() {
        assert_eq!(run_arguments(&["run", "--append", "-x=1"]).append, "-x=1");
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad: &[&[&str]] = &[
            &["run", "--smp", "0"],
            &["run", "--smp", "256"],
            &["run", "--smp", "two"],
            &["run", "--accel", "xen"],
            &["run", "--memory", "0"],
            &["run", "--timeout", "0"],
            &["run", "--timeout", "-5"],
            &["run", "--bench", ""],
            &["run", "--bench", "ipi,,timer"],
            &["run", "--bench", "a b"],
            &["run", "--unknown"],
            &["frobnicate"],
            &[],
        ];
        for arguments in bad {
            let error = parse(arguments).expect_err(&format!("{arguments:?} should be rejected"));
            assert_eq!(error.exit_code(), 2, "{arguments:?}: {error}");
            assert_ne!(error.kind(), ErrorKind::DisplayHelp);
        }
    }

    #[test]
    fn smp_bounds_are_accepted() {
        assert_eq!(run_arguments(&["run", "--smp", "1"]).smp, 1);
        assert_eq!(run_arguments(&["run", "--smp", "255"]).smp, 255);
    }

    #[test]
    fn build_subcommand() {
        assert!(matches!(
            parse(&["build"]).unwrap().command,
            CliCommand::Build
        ));
    }

    #[test]
    fn help_documents_exit_codes_and_qemu() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let run = command.find_subcommand_mut("run").unwrap();
        let help = run.render_long_help().to_string();
        for needle in [
            "--smp",
            "--accel",
            "--memory",
            "--append",
            "--bench",
            "--timeout",
            "--json",
            "--hgrm",
            "--kernel",
            "--qemu",
            "--quiet",
            "--input",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "6  protocol error",
            "4  timeout",
            "SPINDLE_QEMU",
        ] {
            assert!(
                help.contains(needle),
                "run --help lacks {needle:?}:\n{help}"
            );
        }
    }

    #[test]
    fn kvm_probe_override() {
        assert_eq!(
            kvm_probe_from_environment(Some("1")),
            KvmProbe::Assume { available: true }
        );
        assert_eq!(
            kvm_probe_from_environment(Some("0")),
            KvmProbe::Assume { available: false }
        );
        assert_eq!(
            kvm_probe_from_environment(Some("yes")),
            KvmProbe::OpenDevice
        );
        assert_eq!(kvm_probe_from_environment(None), KvmProbe::OpenDevice);
    }
}
