//! Starting QEMU, watching its serial output under a deadline, and killing it.
//!
//! # The QEMU command line
//!
//! ```text
//! qemu-system-x86_64 -machine q35
//!     -accel kvm -cpu host,-arch-capabilities        (KVM)
//!     -accel tcg,thread=multi -cpu max               (TCG)
//!     -smp N -m MiB -nodefaults -display none -no-reboot
//!     -device isa-debug-exit,iobase=0xf4,iosize=0x04
//!     -chardev stdio,id=serial0,signal=off -serial chardev:serial0
//!     -kernel IMAGE -append "ARGS"
//! ```
//!
//! COM1 is QEMU's stdout; QEMU's stdin is `/dev/null`; its stderr is captured.
//! The kernel ends the run through `isa-debug-exit` (QEMU status 33 for
//! success, 35 for failure); `-no-reboot` turns a triple fault into QEMU
//! exiting with status 0.
//!
//! # Killing QEMU
//!
//! The child is owned by a [`ChildGuard`] that kills (SIGKILL) and reaps it
//! when dropped, so QEMU does not outlive the runner on any return path,
//! including a panic that unwinds. QEMU stays in the runner's process group,
//! so a Ctrl-C at the terminal (SIGINT to the foreground group) stops QEMU as
//! well as the runner.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::RunError;

/// The QEMU binary looked up on `PATH` when neither `--qemu` nor `SPINDLE_QEMU` is given.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// Environment variable naming the QEMU binary (overridden by `--qemu`).
pub const QEMU_ENVIRONMENT_VARIABLE: &str = "SPINDLE_QEMU";

/// The KVM device whose openability decides `--accel auto`.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// How long to keep reading QEMU's output after it exited (or was killed),
/// in case a leftover process still holds the pipe open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How often the supervising loop checks whether QEMU exited.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long to let QEMU finish its register dump after a fatal KVM error
/// before killing it.
const FATAL_ERROR_GRACE: Duration = Duration::from_millis(500);

/// Lines QEMU prints on stderr when KVM cannot go on: QEMU then stops the
/// guest (`RUN_STATE_INTERNAL_ERROR`) and waits forever for a monitor
/// command that never comes, so the runner kills it instead of waiting for
/// the timeout.
pub const FATAL_KVM_ERROR_MARKERS: [&str; 3] =
    ["KVM internal error", "KVM: entry failed", "kvm run failed"];

/// The first stderr line that reports a fatal KVM error, if any.
pub fn fatal_kvm_error(stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|line| {
        FATAL_KVM_ERROR_MARKERS
            .iter()
            .any(|marker| line.contains(marker))
    })?;
    let mut description = line.trim().to_string();
    // QEMU names the emulation failure on a later line; keep it when present.
    if let Some(detail) = stderr
        .lines()
        .map(str::trim)
        .find(|line| *line == "emulation failure")
    {
        description.push_str(&format!(" ({detail})"));
    }
    Some(description)
}

/// The accelerator a run actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Linux KVM (hardware virtualization).
    Kvm,
    /// QEMU's TCG (multi-threaded emulation).
    Tcg,
    /// TCG counting instructions (`-icount shift=0`, single-threaded): the
    /// guest's clocks advance one nanosecond per instruction, so timings
    /// read as instruction counts and repeat exactly, whatever the host does.
    TcgIcount,
}

impl Accel {
    /// `"kvm"`, `"tcg"` or `"tcg-icount"`, as in the JSON document.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::TcgIcount => "tcg-icount",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What the user asked for with `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when `/dev/kvm` can be opened read+write, else TCG; falls back to
    /// TCG when QEMU then fails to start KVM or KVM stops the guest.
    #[default]
    Auto,
    /// KVM or an error; no fallback.
    Kvm,
    /// TCG.
    Tcg,
    /// TCG with one instruction per virtual nanosecond (`-icount shift=0`):
    /// figures in "ns" are instruction counts, the same on every run, and
    /// no host stall reaches the guest's clocks. Meant for `--smp 1`: the
    /// virtual CPUs take turns on one thread, and QEMU 7.2 was seen to
    /// deliver no ticks to a busy CPU 1 there.
    TcgIcount,
}

/// How to decide whether KVM is usable. Tests use [`KvmProbe::Assume`] to
/// take the KVM path without a working `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvmProbe {
    /// Open `/dev/kvm` for reading and writing (the real behaviour).
    #[default]
    OpenDevice,
    /// Do not look; take this answer.
    Assume {
        /// Whether KVM counts as usable.
        available: bool,
    },
}

impl KvmProbe {
    /// `Ok(())` when KVM is usable, else why not.
    pub fn check(self) -> Result<(), String> {
        match self {
            KvmProbe::OpenDevice => OpenOptions::new()
                .read(true)
                .write(true)
                .open(KVM_DEVICE)
                .map(drop)
                .map_err(|error| format!("cannot open {KVM_DEVICE} read+write: {error}")),
            KvmProbe::Assume { available: true } => Ok(()),
            KvmProbe::Assume { available: false } => Err("KVM assumed unavailable".to_string()),
        }
    }
}

/// How the virtual CPUs are arranged: QEMU's `-smp N,sockets=S,cores=C,threads=T`.
/// QEMU pads each level of the APIC ID to a power of two, so a topology
/// like 2×3×1 gives non-dense APIC IDs (0, 1, 2, 4, 5, 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Sockets.
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

impl Topology {
    /// The number of CPUs: sockets × cores × threads.
    pub fn cpus(&self) -> u32 {
        self.sockets
            .saturating_mul(self.cores)
            .saturating_mul(self.threads)
    }
}

impl std::str::FromStr for Topology {
    type Err = String;

    /// Parses `SOCKETSxCORESxTHREADS`, e.g. `2x3x1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('x').collect();
        let [sockets, cores, threads] = parts.as_slice() else {
            return Err(format!(
                "'{text}' is not SOCKETSxCORESxTHREADS (e.g. 2x3x1)"
            ));
        };
        let number = |part: &str, what: &str| -> Result<u32, String> {
            match part.parse::<u32>() {
                Ok(value) if value > 0 => Ok(value),
                _ => Err(format!(
                    "'{text}': {what} must be a positive number, not '{part}'"
                )),
            }
        };
        Ok(Topology {
            sockets: number(sockets, "sockets")?,
            cores: number(cores, "cores")?,
            threads: number(threads, "threads")?,
        })
    }
}

/// The value of QEMU's `-smp` option.
pub fn smp_argument(smp: u32, topology: Option<Topology>) -> String {
    match topology {
        None => smp.to_string(),
        Some(topology) => format!(
            "{smp},sockets={},cores={},threads={}",
            topology.sockets, topology.cores, topology.threads
        ),
    }
}

/// The arguments after the program name; see the module documentation.
pub fn qemu_arguments(
    accel: Accel,
    smp: u32,
    topology: Option<Topology>,
    memory_mib: u32,
    kernel: &Path,
    kernel_arguments: &str,
) -> Vec<OsString> {
    let mut arguments: Vec<OsString> = Vec::new();
    let mut push = |argument: &str| arguments.push(OsString::from(argument));
    push("-machine");
    push("q35");
    match accel {
        Accel::Kvm => {
            push("-accel");
            push("kvm");
            push("-cpu");
            push("host,-arch-capabilities");
        }
        Accel::Tcg => {
            push("-accel");
            push("tcg,thread=multi");
            push("-cpu");
            push("max");
        }
        Accel::TcgIcount => {
            push("-accel");
            push("tcg,thread=single");
            push("-icount");
            push("shift=0");
            push("-cpu");
            push("max");
        }
    }
    push("-smp");
    push(&smp_argument(smp, topology));
    push("-m");
    push(&memory_mib.to_string());
    for argument in [
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
    ] {
        push(argument);
    }
    arguments.push(kernel.as_os_str().to_owned());
    arguments.push(OsString::from("-append"));
    arguments.push(OsString::from(kernel_arguments));
    arguments
}

/// Where the QEMU binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuProgram {
    /// The program to run (a path, or a name for `PATH` lookup).
    pub program: PathBuf,
    /// Neither `--qemu` nor `SPINDLE_QEMU` named it (only then is installing offered).
    pub is_default: bool,
}

impl QemuProgram {
    /// `--qemu` if given, else `$SPINDLE_QEMU` if set and non-empty, else
    /// `qemu-system-x86_64` on `PATH`.
    pub fn choose(explicit: Option<&Path>) -> QemuProgram {
        if let Some(path) = explicit {
            return QemuProgram {
                program: path.to_path_buf(),
                is_default: false,
            };
        }
        match std::env::var_os(QEMU_ENVIRONMENT_VARIABLE) {
            Some(value) if !value.is_empty() => QemuProgram {
                program: PathBuf::from(value),
                is_default: false,
            },
            _ => QemuProgram {
                program: PathBuf::from(DEFAULT_QEMU),
                is_default: true,
            },
        }
    }

    /// The program's full path if it exists (searching `PATH` for a bare name).
    pub fn resolve(&self) -> Option<PathBuf> {
        find_program(&self.program)
    }
}

/// Finds `program`: a path with a directory part must exist; a bare name is
/// searched in `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root (`id -u` prints 0).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "0"
        })
        .unwrap_or(false)
}

/// Whether nobody can answer a prompt: stdin is not a terminal, or `CI=true`.
pub fn non_interactive() -> bool {
    use std::io::IsTerminal;
    !io::stdin().is_terminal() || std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Installs QEMU with `apt-get update` and `apt-get install -y qemu-system-x86`,
/// output going to the runner's stderr.
pub fn install_qemu() -> Result<(), RunError> {
    for arguments in [&["update"][..], &["install", "-y", "qemu-system-x86"][..]] {
        let command_text = format!("apt-get {}", arguments.join(" "));
        let status = Command::new("apt-get")
            .args(arguments)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(io::stderr())
            .status()
            .map_err(|_| RunError::QemuInstall {
                command: command_text.clone(),
                status: None,
            })?;
        if !status.success() {
            return Err(RunError::QemuInstall {
                command: command_text,
                status: status.code(),
            });
        }
    }
    Ok(())
}

/// Owns a child process and kills and reaps it when dropped.
pub struct ChildGuard {
    child: Child,
    finished: bool,
}

impl ChildGuard {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> Self {
        ChildGuard {
            child,
            finished: false,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (reaping it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.finished = true;
        }
        Ok(status)
    }

    /// Kills the child (SIGKILL) and waits for it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        // An error here means it already exited; `wait` still reaps it.
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.finished = true;
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What happened to one QEMU process.
#[derive(Debug)]
pub struct Supervised {
    /// QEMU's exit status code (`None`: killed, at the timeout or by a signal).
    pub qemu_status: Option<i32>,
    /// The deadline passed and the runner killed QEMU.
    pub timed_out: bool,
    /// QEMU reported a fatal KVM error (see [`FATAL_KVM_ERROR_MARKERS`]) and
    /// the runner killed it: the error line.
    pub kvm_fatal_error: Option<String>,
    /// Everything QEMU wrote to stderr (lossy UTF-8).
    pub stderr: String,
    /// From spawning QEMU to noticing its exit.
    pub wall: Duration,
}

/// Events from the reader threads.
enum Event {
    Stdout(Vec<u8>),
    StdoutClosed,
    Stderr(Vec<u8>),
    StderrClosed,
}

fn spawn_reader(
    mut source: impl Read + Send + 'static,
    sender: mpsc::Sender<Event>,
    is_stdout: bool,
) {
    thread::spawn(move || {
        let mut buffer = [0_u8; 8192];
        loop {
            match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    let bytes = buffer[..read].to_vec();
                    let event = if is_stdout {
                        Event::Stdout(bytes)
                    } else {
                        Event::Stderr(bytes)
                    };
                    if sender.send(event).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = sender.send(if is_stdout {
            Event::StdoutClosed
        } else {
            Event::StderrClosed
        });
    });
}

/// Spawns `command`, retrying briefly on `ETXTBSY` (a just-written script
/// still open for writing in a concurrently forked child).
fn spawn_with_retry(command: &mut Command) -> io::Result<Child> {
    const TEXT_FILE_BUSY: i32 = 26;
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(error) if error.raw_os_error() == Some(TEXT_FILE_BUSY) && attempts < 50 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Runs `program arguments`, handing each chunk of stdout to `on_output` as
/// it arrives, until QEMU exits or `timeout` passes (then QEMU is killed).
/// QEMU is also killed shortly after it reports a fatal KVM error, since it
/// then stops the guest for good.
///
/// `serial_input` is written to QEMU's stdin (the kernel's COM1 input) once
/// the kernel has said `hello` (bytes typed earlier would reach the UART
/// while the firmware owns it, and be lost), and stdin is then closed;
/// without it stdin is `/dev/null`.
pub fn supervise(
    program: &Path,
    arguments: &[OsString],
    timeout: Duration,
    serial_input: Option<&[u8]>,
    mut on_output: impl FnMut(&[u8]),
) -> Result<Supervised, RunError> {
    let mut command = Command::new(program);
    command
        .args(arguments)
        .stdin(if serial_input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = spawn_with_retry(&mut command).map_err(|source| RunError::QemuSpawn {
        program: program.to_path_buf(),
        source,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut pending_input = child.stdin.take().zip(serial_input.map(<[u8]>::to_vec));
    // The end of the output seen so far, long enough to find the marker
    // across chunk boundaries.
    let mut output_tail: Vec<u8> = Vec::new();
    let mut guard = ChildGuard::new(child);

    let (sender, receiver) = mpsc::channel();
    spawn_reader(stdout, sender.clone(), true);
    spawn_reader(stderr, sender, false);

    let mut stderr_bytes = Vec::new();
    let mut open_streams = 2;
    let mut handle = |event: Event, stderr_bytes: &mut Vec<u8>, open_streams: &mut i32| match event
    {
        Event::Stdout(bytes) => {
            if pending_input.is_some() {
                output_tail.extend_from_slice(&bytes);
                if contains(&output_tail, KERNEL_READY_MARKER) {
                    if let Some((mut stdin, input)) = pending_input.take() {
                        // The guest reads at UART speed; a closed pipe (QEMU
                        // gone) ends the writer.
                        thread::spawn(move || {
                            let _ = stdin.write_all(&input);
                        });
                    }
                } else {
                    let keep = output_tail.len().saturating_sub(KERNEL_READY_MARKER.len());
                    output_tail.drain(..keep);
                }
            }
            on_output(&bytes)
        }
        Event::Stderr(bytes) => stderr_bytes.extend_from_slice(&bytes),
        Event::StdoutClosed | Event::StderrClosed => *open_streams -= 1,
    };

    let mut timed_out = false;
    let mut fatal_error_seen: Option<Instant> = None;
    let mut stderr_checked = 0;
    let exit_status = loop {
        if let Some(status) = guard
            .try_wait()
            .map_err(|source| io_error("waiting for QEMU", source))?
        {
            break status;
        }
        let now = Instant::now();
        if fatal_error_seen.is_none() && stderr_bytes.len() != stderr_checked {
            stderr_checked = stderr_bytes.len();
            if fatal_kvm_error(&String::from_utf8_lossy(&stderr_bytes)).is_some() {
                fatal_error_seen = Some(now);
            }
        }
        if fatal_error_seen.is_some_and(|seen| now >= seen + FATAL_ERROR_GRACE) {
            break guard
                .kill()
                .map_err(|source| io_error("killing QEMU", source))?;
        }
        if now >= deadline {
            timed_out = true;
            break guard
                .kill()
                .map_err(|source| io_error("killing QEMU", source))?;
        }
        let wait = (deadline - now).min(POLL_INTERVAL);
        match receiver.recv_timeout(wait) {
            Ok(event) => handle(event, &mut stderr_bytes, &mut open_streams),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both readers finished: QEMU closed its pipes; it is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                thread::sleep(remaining.min(POLL_INTERVAL));
            }
        }
    };
    let wall = start.elapsed();

    // Drain what QEMU wrote before it exited; give up after a grace period if
    // something else (a leftover grandchild) keeps a pipe open.
    let drain_deadline = Instant::now() + DRAIN_GRACE;
    while open_streams > 0 {
        let remaining = drain_deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(event) => handle(event, &mut stderr_bytes, &mut open_streams),
            Err(_) => break,
        }
    }

    let stderr = String::from_utf8_lossy(&stderr_bytes).into_owned();
    let kvm_fatal_error = fatal_kvm_error(&stderr);
    Ok(Supervised {
        qemu_status: if timed_out { None } else { exit_status.code() },
        timed_out,
        kvm_fatal_error,
        stderr,
        wall,
    })
}

/// What the kernel prints once its console works: the `hello` record.
const KERNEL_READY_MARKER: &[u8] = br#""t":"hello""#;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn io_error(context: &str, source: io::Error) -> RunError {
    RunError::Io {
        context: context.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(arguments: &[OsString]) -> Vec<String> {
        arguments
            .iter()
            .map(|argument| argument.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn topology_parsing_and_smp_argument() {
        let topology: Topology = "2x3x1".parse().unwrap();
        assert_eq!(
            topology,
            Topology {
                sockets: 2,
                cores: 3,
                threads: 1
            }
        );
        assert_eq!(topology.cpus(), 6);
        assert_eq!(
            smp_argument(6, Some(topology)),
            "6,sockets=2,cores=3,threads=1"
        );
        assert_eq!(smp_argument(4, None), "4");
        for bad in ["2x3", "2x0x1", "axbxc", "", "1x2x3x4"] {
            assert!(bad.parse::<Topology>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn kvm_command_line() {
        let arguments = qemu_arguments(
            Accel::Kvm,
            4,
            None,
            512,
            Path::new("/k/image"),
            "bench=ipi verbose=1",
        );
        assert_eq!(
            strings(&arguments).join(" "),
            "-machine q35 -accel kvm -cpu host,-arch-capabilities -smp 4 -m 512 -nodefaults \
             -display none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -chardev stdio,id=serial0,signal=off -serial chardev:serial0 -kernel /k/image \
             -append bench=ipi verbose=1"
        );
        assert_eq!(arguments.last().unwrap(), "bench=ipi verbose=1");
    }

    /// The arguments after `-accel` for `accel`, with an empty kernel
    /// command line (which stays the last argument).
    fn after_accel(accel: Accel) -> Vec<String> {
        let arguments = strings(&qemu_arguments(accel, 2, None, 256, Path::new("k"), ""));
        assert_eq!(arguments.last().unwrap(), "");
        let position = arguments
            .iter()
            .position(|argument| argument == "-accel")
            .unwrap();
        arguments[position + 1..].to_vec()
    }

    #[test]
    fn tcg_command_line() {
        assert_eq!(
            after_accel(Accel::Tcg)[..3],
            ["tcg,thread=multi", "-cpu", "max"]
        );
    }

    #[test]
    fn tcg_icount_command_line() {
        assert_eq!(
            after_accel(Accel::TcgIcount)[..5],
            ["tcg,thread=single", "-icount", "shift=0", "-cpu", "max"]
        );
        assert_eq!(Accel::TcgIcount.as_str(), "tcg-icount");
    }

    #[test]
    fn program_lookup() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/bin/sh")).is_some());
        assert!(find_program(Path::new("/nonexistent/qemu")).is_none());
        assert!(find_program(Path::new("spindle-no-such-program")).is_none());
        let explicit = QemuProgram::choose(Some(Path::new("/opt/qemu")));
        assert_eq!(
            explicit,
            QemuProgram {
                program: "/opt/qemu".into(),
                is_default: false
            }
        );
    }

    #[test]
    fn fatal_kvm_errors_are_recognised() {
        let dump =
            "KVM internal error. Suberror: 1\nextra data[0]: 0x1\nemulation failure\nRAX=0\n";
        assert_eq!(
            fatal_kvm_error(dump).as_deref(),
            Some("KVM internal error. Suberror: 1 (emulation failure)")
        );
        assert_eq!(
            fatal_kvm_error("KVM: entry failed, hardware error 0x80000021\n").as_deref(),
            Some("KVM: entry failed, hardware error 0x80000021")
        );
        assert_eq!(
            fatal_kvm_error("failed to initialize kvm: Permission denied\n"),
            None
        );
        assert_eq!(fatal_kvm_error(""), None);
    }

    #[test]
    fn supervise_kills_after_a_fatal_kvm_error() {
        let script = "echo 'KVM internal error. Suberror: 1' >&2; echo 'emulation failure' >&2; exec sleep 1000";
        let arguments = [OsString::from("-c"), OsString::from(script)];
        let start = Instant::now();
        let supervised = supervise(
            Path::new("/bin/sh"),
            &arguments,
            Duration::from_secs(60),
            None,
            |_| {},
        )
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!supervised.timed_out);
        assert_eq!(supervised.qemu_status, None);
        assert_eq!(
            supervised.kvm_fatal_error.as_deref(),
            Some("KVM internal error. Suberror: 1 (emulation failure)")
        );
    }

    #[test]
    fn assumed_kvm_probe() {
        assert!(KvmProbe::Assume { available: true }.check().is_ok());
        assert!(KvmProbe::Assume { available: false }.check().is_err());
    }

    #[test]
    fn guard_kills_on_drop() {
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let process_id = child.id();
        drop(ChildGuard::new(child));
        assert!(!Path::new(&format!("/proc/{process_id}")).exists());
    }

    #[test]
    fn supervise_collects_output_and_status() {
        let mut output = Vec::new();
        let arguments = [
            OsString::from("-c"),
            OsString::from("echo hello; echo oops >&2; exit 33"),
        ];
        let supervised = supervise(
            Path::new("/bin/sh"),
            &arguments,
            Duration::from_secs(20),
            None,
            |bytes| output.extend_from_slice(bytes),
        )
        .unwrap();
        assert_eq!(supervised.qemu_status, Some(33));
        assert!(!supervised.timed_out);
        assert_eq!(output, b"hello\n");
        assert_eq!(supervised.stderr, "oops\n");
    }

    #[test]
    fn supervise_feeds_serial_input_after_hello() {
        let mut output = Vec::new();
        // Input must not arrive before the kernel says hello: the first
        // `read` times out (status 2) when nothing is there yet.
        let arguments = [
            OsString::from("-c"),
            OsString::from(
                "if read -t 1 early; then exit 2; fi; \
                 echo '@sp1 {\"t\":\"hello\",\"version\":1}'; \
                 read first; read second; echo \"got $first+$second\"; exit 33",
            ),
        ];
        let supervised = supervise(
            Path::new("/bin/sh"),
            &arguments,
            Duration::from_secs(20),
            Some(b"one\ntwo\n"),
            |bytes| output.extend_from_slice(bytes),
        )
        .unwrap();
        assert_eq!(
            supervised.qemu_status,
            Some(33),
            "input arrived before hello"
        );
        assert!(
            output.ends_with(b"got one+two\n"),
            "{}",
            String::from_utf8_lossy(&output)
        );
    }

    #[test]
    fn supervise_kills_at_the_deadline() {
        let arguments = [
            OsString::from("-c"),
            OsString::from("echo started; exec sleep 1000"),
        ];
        let start = Instant::now();
        let supervised = supervise(
            Path::new("/bin/sh"),
            &arguments,
            Duration::from_millis(300),
            None,
            |_| {},
        )
        .unwrap();
        assert!(supervised.timed_out);
        assert_eq!(supervised.qemu_status, None);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
