//! Kernel arguments (`--append` / `-append`), validated up front: an unknown
//! key, a bad number or an unknown benchmark name is an error the run reports
//! and fails on, never something silently ignored. See docs/kernel-args.md.

use core::fmt;

use spindle_cmdline::Cmdline;

/// Every key the kernel understands.
pub const KNOWN_KEYS: &[&str] = &[
    "bench",
    "fault",
    "fault_cpu",
    "tick_hz",
    "timer_ms",
    "ipi_rounds",
    "tsc_samples",
    "read_lines",
    "dispatch_samples",
    "dispatch_calls",
    "extensions",
    "selftest",
    "selftest_ms",
    "sched",
    "swap",
    "watchdog_ms",
    "budget_ms",
    "tickless",
    "strand_count",
    "strand_ms",
    "mixed_ms",
    "mixed_job_us",
    "thread_rounds",
    "thread_count",
];
/// Benchmark names `bench=` accepts.
pub const BENCH_NAMES: &[&str] = &[
    "timer", "ipi", "tsc", "dispatch", "mixed", "forkjoin", "pingpong", "blocking",
];
/// Self-test names `selftest=` accepts.
pub const SELFTEST_NAMES: &[&str] = &[
    "dispatch-churn",
    "grace-stall",
    "strands",
    "strand-ops",
    "processors",
    "uthreads",
    "activations",
];
/// Policy names `sched=` accepts (the sched-ext catalogue; checked against
/// it at boot).
pub const SCHED_NAMES: &[&str] = &[
    "rr",
    "priority",
    "stride",
    "edf",
    "central",
    "steal",
    "weighted",
    // Deliberately broken policies, for the ejection tests.
    "broken-panic",
    "broken-hang",
    "broken-drop",
    "broken-foreign",
    "broken-twice",
    "broken-stall",
];
/// Most entries `swap=` takes.
pub const MAX_SWAPS: usize = 64;
/// Fault names `fault=` accepts.
pub const FAULT_NAMES: &[&str] = &[
    "page",
    "invalid-opcode",
    "general-protection",
    "divide",
    "breakpoint",
    "panic",
    "hang",
    "triple",
    "stack-overflow",
];

/// A deliberate fault, for testing the fault path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Read an unmapped address (#PF, vector 14).
    Page,
    /// `ud2` (#UD, vector 6).
    InvalidOpcode,
    /// Read a non-canonical address (#GP, vector 13).
    GeneralProtection,
    /// Divide by zero (#DE, vector 0).
    Divide,
    /// `int3` (#BP, vector 3).
    Breakpoint,
    /// A Rust panic.
    Panic,
    /// Stop answering (the runner's timeout must kill QEMU).
    Hang,
    /// Load an empty IDT and trap: a triple fault (QEMU exits with 0).
    Triple,
    /// Recurse until the stack's guard page is hit: a double fault,
    /// reported from the IST stack.
    StackOverflow,
}

/// The benchmarks selected with `bench=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Benches {
    /// APIC timer lateness.
    pub timer: bool,
    /// IPI round trips.
    pub ipi: bool,
    /// TSC read cost.
    pub tsc: bool,
    /// Event dispatch: raises against direct and indirect calls.
    pub dispatch: bool,
    /// Strands of every kind at once under the running policy.
    pub mixed: bool,
    /// Create and join a null thread: strands against uthreads.
    pub forkjoin: bool,
    /// A token handed back and forth: strands against uthreads.
    pub pingpong: bool,
    /// Threads computing and making blocking kernel calls: utilisation.
    pub blocking: bool,
}

/// A self-test that runs after the benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selftest {
    /// Handlers installed and removed on CPU 0 while the other CPUs raise.
    DispatchChurn,
    /// `grace-stall`: a raise held on CPU 1 while CPU 0 installs, reported
    /// as a grace-period stall.
    GraceStall,
    /// Strands created, preempted, yielding and exiting on every CPU.
    Strands,
    /// Join, directed yield and affinity changes.
    StrandOperations,
    /// `processors`: processor allocation to extension domains.
    Processors,
    /// `uthreads`: thousands of user-level threads spawned, joined and
    /// counting under a mutex on every CPU.
    Uthreads,
    /// `activations`: the same under scheduler activations, with the kernel
    /// taking processors back meanwhile.
    Activations,
}

/// The compiled-in extensions `extensions=` installs at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `timestamps`: every console line gets the time since boot.
    pub timestamps: bool,
}

/// The validated kernel arguments.
#[derive(Clone, Copy, Debug)]
pub struct KernelArgs {
    /// Benchmarks to run (default: all).
    pub benches: Benches,
    /// Fault to provoke, if any.
    pub fault: Option<Fault>,
    /// CPU index that provokes the fault.
    pub fault_cpu: usize,
    /// Tick rate of the per-CPU APIC timers.
    pub tick_hz: u64,
    /// How long the timer-lateness window lasts.
    pub timer_ms: u64,
    /// IPI round trips per CPU.
    pub ipi_rounds: u64,
    /// TSC reads per CPU.
    pub tsc_samples: u64,
    /// Lines to read from the serial console (each echoed as an `input`
    /// record) before the benchmarks: the console's input self-test.
    pub read_lines: u64,
    /// Samples per CPU and case of the dispatch benchmark.
    pub dispatch_samples: u64,
    /// Calls timed together in one sample of a call or raise case.
    pub dispatch_calls: u64,
    /// Extensions to install at boot.
    pub extensions: Extensions,
    /// Self-test to run, if any.
    pub selftest: Option<Selftest>,
    /// How long the self-test runs.
    pub selftest_ms: u64,
    /// The scheduling policy (a name from the sched-ext catalogue).
    pub sched: &'static str,
    /// Live swaps: (offset from the first strand's creation in ns, policy).
    pub swaps: [(u64, &'static str); MAX_SWAPS],
    /// Entries of `swaps` in use.
    pub swap_count: usize,
    /// How long a runnable strand may wait before its policy is ejected.
    pub watchdog_ms: u64,
    /// Whether idle CPUs (other than CPU 0) stop their tick.
    pub tickless: bool,
    /// How long one policy callback may run before its policy is ejected
    /// (hand-over callbacks get ten times as long).
    pub budget_ms: u64,
    /// Strands the `strands` self-test creates.
    pub strand_count: u64,
    /// How long each CPU-bound strand of the `strands` self-test computes.
    pub strand_ms: u64,
    /// How long the `mixed` benchmark runs.
    pub mixed_ms: u64,
    /// Work per job of `mixed`'s periodic strands, in microseconds.
    pub mixed_job_us: u64,
    /// Samples of each `forkjoin` and `pingpong` histogram.
    pub thread_rounds: u64,
    /// Threads the `uthreads` self-test spawns and joins.
    pub thread_count: u64,
}

impl Default for KernelArgs {
    fn default() -> Self {
        KernelArgs {
            benches: Benches {
                timer: true,
                ipi: true,
                tsc: true,
                dispatch: false,
                mixed: false,
                forkjoin: false,
                pingpong: false,
                blocking: false,
            },
            fault: None,
            fault_cpu: 0,
            tick_hz: 1000,
            timer_ms: 250,
            ipi_rounds: 100,
            tsc_samples: 1_000,
            read_lines: 0,
            dispatch_samples: 200,
            dispatch_calls: spindle_bench_dispatch::bench::CALLS_PER_CALL_SAMPLE,
            extensions: Extensions::default(),
            selftest: None,
            selftest_ms: 1000,
            sched: "rr",
            swaps: [(0, "rr"); MAX_SWAPS],
            swap_count: 0,
            watchdog_ms: 2000,
            tickless: true,
            budget_ms: 100,
            strand_count: 32,
            strand_ms: 20,
            mixed_ms: 1000,
            mixed_job_us: spindle_bench_mixed::JOB_NS / 1000,
            thread_rounds: 1000,
            thread_count: 2000,
        }
    }
}

/// A bad kernel command line; the message names the offending argument.
#[derive(Debug)]
pub enum ArgsError<'a> {
    /// The command line's syntax is wrong.
    Syntax(spindle_cmdline::CmdlineError<'a>),
    /// A key the kernel does not know.
    UnknownKey(&'a str),
    /// A known key with a bad value.
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// A known key naming something that does not exist.
    UnknownName {
        /// The key.
        key: &'static str,
        /// The names it accepts.
        known: &'static [&'static str],
    },
}

impl fmt::Display for ArgsError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Syntax(error) => write!(formatter, "bad kernel command line: {error}"),
            ArgsError::UnknownKey(key) => {
                write!(
                    formatter,
                    "unknown kernel argument '{key}'; known arguments: "
                )?;
                write_list(formatter, KNOWN_KEYS)
            }
            ArgsError::Value { key, problem } => {
                write!(formatter, "kernel argument '{key}': {problem}")
            }
            ArgsError::UnknownName { key, known } => {
                write!(
                    formatter,
                    "kernel argument '{key}': unknown name; known names: "
                )?;
                write_list(formatter, known)
            }
        }
    }
}

fn write_list(formatter: &mut fmt::Formatter<'_>, names: &[&str]) -> fmt::Result {
    for (position, name) in names.iter().enumerate() {
        if position > 0 {
            formatter.write_str(", ")?;
        }
        formatter.write_str(name)?;
    }
    Ok(())
}

fn value_error(key: &'static str, problem: &'static str) -> ArgsError<'static> {
    ArgsError::Value { key, problem }
}

fn number(
    key: &'static str,
    value: Option<&str>,
    minimum: u64,
    maximum: u64,
) -> Result<u64, ArgsError<'static>> {
    let text = value.ok_or_else(|| value_error(key, "needs a value"))?;
    let number = spindle_cmdline::parse_u64(text).map_err(|_| value_error(key, "not a number"))?;
    if number < minimum || number > maximum {
        return Err(value_error(key, "out of range"));
    }
    Ok(number)
}

fn known_policy(name: &str) -> Option<&'static str> {
    SCHED_NAMES.iter().copied().find(|known| *known == name)
}

fn known_key(key: &str) -> Option<&'static str> {
    KNOWN_KEYS.iter().copied().find(|known| *known == key)
}

/// Parses and validates the command line.
pub fn parse(text: &str) -> Result<KernelArgs, ArgsError<'_>> {
    let command_line = Cmdline::parse(text).map_err(ArgsError::Syntax)?;
    let mut args = KernelArgs::default();
    for argument in command_line.iter() {
        let Some(key) = known_key(argument.key) else {
            return Err(ArgsError::UnknownKey(argument.key));
        };
        let value = argument.value;
        match key {
            "bench" => {
                let list = value.ok_or_else(|| value_error(key, "needs a value"))?;
                args.benches = Benches {
                    timer: false,
                    ipi: false,
                    tsc: false,
                    dispatch: false,
                    mixed: false,
                    forkjoin: false,
                    pingpong: false,
                    blocking: false,
                };
                for name in spindle_cmdline::split_list(list, ',') {
                    match name {
                        "timer" => args.benches.timer = true,
                        "ipi" => args.benches.ipi = true,
                        "tsc" => args.benches.tsc = true,
                        "dispatch" => args.benches.dispatch = true,
                        "mixed" => args.benches.mixed = true,
                        "forkjoin" => args.benches.forkjoin = true,
                        "pingpong" => args.benches.pingpong = true,
                        "blocking" => args.benches.blocking = true,
                        _ => {
                            return Err(ArgsError::UnknownName {
                                key,
                                known: BENCH_NAMES,
                            })
                        }
                    }
                }
            }
            "fault" => {
                args.fault = Some(match value.unwrap_or("") {
                    "page" => Fault::Page,
                    "invalid-opcode" => Fault::InvalidOpcode,
                    "general-protection" => Fault::GeneralProtection,
                    "divide" => Fault::Divide,
                    "breakpoint" => Fault::Breakpoint,
                    "panic" => Fault::Panic,
                    "hang" => Fault::Hang,
                    "triple" => Fault::Triple,
                    "stack-overflow" => Fault::StackOverflow,
                    _ => {
                        return Err(ArgsError::UnknownName {
                            key,
                            known: FAULT_NAMES,
                        })
                    }
                })
            }
            "fault_cpu" => {
                args.fault_cpu =
                    number(key, value, 0, crate::arch::cpu::MAX_CPUS as u64 - 1)? as usize
            }
            "tick_hz" => args.tick_hz = number(key, value, 1, 100_000)?,
            "timer_ms" => args.timer_ms = number(key, value, 0, 600_000)?,
            "ipi_rounds" => args.ipi_rounds = number(key, value, 0, 1_000_000)?,
            "tsc_samples" => args.tsc_samples = number(key, value, 0, 100_000_000)?,
            "read_lines" => args.read_lines = number(key, value, 0, 64)?,
            "dispatch_samples" => args.dispatch_samples = number(key, value, 1, 100_000)?,
            "dispatch_calls" => args.dispatch_calls = number(key, value, 1, 1_000_000)?,
            "extensions" => {
                let list = value.ok_or_else(|| value_error(key, "needs a value"))?;
                for name in spindle_cmdline::split_list(list, ',') {
                    match name {
                        "timestamps" => args.extensions.timestamps = true,
                        _ => {
                            return Err(ArgsError::UnknownName {
                                key,
                                known: crate::extensions::EXTENSION_NAMES,
                            })
                        }
                    }
                }
            }
            "selftest" => {
                args.selftest = Some(match value.unwrap_or("") {
                    "dispatch-churn" => Selftest::DispatchChurn,
                    "grace-stall" => Selftest::GraceStall,
                    "strands" => Selftest::Strands,
                    "strand-ops" => Selftest::StrandOperations,
                    "processors" => Selftest::Processors,
                    "uthreads" => Selftest::Uthreads,
                    "activations" => Selftest::Activations,
                    _ => {
                        return Err(ArgsError::UnknownName {
                            key,
                            known: SELFTEST_NAMES,
                        })
                    }
                })
            }
            "selftest_ms" => args.selftest_ms = number(key, value, 1, 600_000)?,
            "sched" => {
                args.sched = known_policy(value.unwrap_or("")).ok_or(ArgsError::UnknownName {
                    key,
                    known: SCHED_NAMES,
                })?;
            }
            "strand_count" => args.strand_count = number(key, value, 1, 4096)?,
            "strand_ms" => args.strand_ms = number(key, value, 1, 600_000)?,
            "mixed_ms" => args.mixed_ms = number(key, value, 1, 600_000)?,
            "mixed_job_us" => args.mixed_job_us = number(key, value, 1, 1_000_000)?,
            "thread_rounds" => args.thread_rounds = number(key, value, 1, 1_000_000)?,
            "thread_count" => args.thread_count = number(key, value, 1, 1_000_000)?,
            "watchdog_ms" => args.watchdog_ms = number(key, value, 1, 600_000)?,
            "budget_ms" => args.budget_ms = number(key, value, 1, 600_000)?,
            "tickless" => {
                args.tickless = match value {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err(value_error(key, "on or off")),
                }
            }
            "swap" => {
                let list = value.ok_or_else(|| value_error(key, "needs a value"))?;
                args.swap_count = 0;
                for entry in spindle_cmdline::split_list(list, ',') {
                    let (name, at) = entry
                        .split_once('@')
                        .ok_or_else(|| value_error(key, "entries are NAME@TIME, e.g. edf@100ms"))?;
                    let name = known_policy(name).ok_or(ArgsError::UnknownName {
                        key,
                        known: SCHED_NAMES,
                    })?;
                    let at = spindle_cmdline::parse_duration_ns(at)
                        .map_err(|_| value_error(key, "TIME must be a duration such as 100ms"))?;
                    if args.swap_count == MAX_SWAPS {
                        return Err(value_error(key, "at most 64 entries"));
                    }
                    args.swaps[args.swap_count] = (at, name);
                    args.swap_count += 1;
                }
            }
            _ => unreachable!("every known key is handled"),
        }
    }
    Ok(args)
}
