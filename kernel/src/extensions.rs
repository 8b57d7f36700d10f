//! The extension model's kernel side: the dispatcher, the attestation authority, the kernel domain, the name server, `print` as an event, and the compiled-in extensions.
//!
//! The model itself is safe code in `kernel/libs/dispatch` and
//! `kernel/libs/domains`; this module gives it the kernel's services and
//! runs the boot-time steps:
//!
//! 1. [`init`] creates the [`Dispatcher`] (CPU index from GS, clock from the
//!    TSC), takes the one-time [`Attestation`] authority, creates the kernel
//!    domain (trusted by assertion) exporting `kernel.Console` and
//!    `kernel.Clock`, creates the console's `print` event and registers it in
//!    the [`NameServer`] for compiler-checked importers only.
//! 2. [`install`] loads a compiled-in extension by name: its domain is
//!    created from its module with the provenance the build script found
//!    (`$OUT_DIR/extension_provenance.rs`), resolved against the kernel
//!    domain, and its handlers installed all together.
//! 3. `kprintln!` raises `print` once [`init`] ran ([`print`]); fault and
//!    panic reports never do (they write to the console directly).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use alloc::{format, vec};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::{Mutex, Once};
use spindle_dispatch::{
    Authorization, CpuIdentity, DefaultPolicy, Dispatcher, DomainId, DomainUsage, EventOwner,
    GraceStall, Platform,
};
use spindle_domains::{
    require_compiler_checked, resolve, Attestation, Domain, Interface, Module, NameServer,
    Provenance,
};
use spindle_services::{Clock, Console, PrintEvent, CLOCK, CONSOLE, PRINT};

use crate::arch::cpu;
use crate::console;

/// What the build script found about each extension crate.
mod generated {
    include!(concat!(env!("OUT_DIR"), "/extension_provenance.rs"));
}

/// Extensions that `extensions=` can name, with the crate each comes from.
pub const EXTENSION_NAMES: &[&str] = &[spindle_console_timestamps::NAME];
/// The crate of the `timestamps` extension, as the build script names it.
const TIMESTAMPS_CRATE: &str = "spindle-console-timestamps";

/// The kernel's dispatcher.
static DISPATCHER: Once<Dispatcher> = Once::new();
/// The console's `print` event, once created.
static PRINT_EVENT: Once<PrintEvent> = Once::new();
/// Everything else [`init`] sets up.
static SERVICES: Once<Services> = Once::new();
/// Domains certified compiler-checked: the `print` owner's authorization
/// procedure accepts handlers from these only.
static COMPILER_CHECKED: Mutex<Vec<DomainId>> = Mutex::new(Vec::new());

/// The kernel's extension services.
struct Services {
    /// The one authority that certifies provenance.
    attestation: Mutex<Attestation>,
    /// The kernel domain (trusted by assertion).
    kernel_domain: Domain,
    /// Where interfaces are published by name.
    names: NameServer,
    /// The primary right on `print`.
    _print_owner: EventOwner<str, ()>,
    /// Extensions installed, in order.
    installed: Mutex<Vec<Installed>>,
}

/// An installed compiled-in extension.
struct Installed {
    name: &'static str,
    domain: Domain,
    timestamps: spindle_console_timestamps::Timestamps,
}

/// What [`installed`] reports of each extension.
pub struct InstalledReport {
    /// The extension's name.
    pub name: &'static str,
    /// Its domain's identity.
    pub domain: DomainId,
    /// Its domain's provenance.
    pub provenance: Provenance,
    /// Handlers it installed.
    pub handlers: usize,
    /// Lines it timestamped (the demonstration extension's own count).
    pub lines: u64,
    /// Measured time its handlers took, charged to its domain.
    pub usage: DomainUsage,
}

/// The clock of the dispatcher and of the `Clock` interface: nanoseconds
/// since boot, from the TSC.
fn now_nanoseconds() -> u64 {
    crate::kernel::nanoseconds_since_boot()
}

/// Which CPU runs the caller, for the dispatcher's grace periods: the index
/// in the CPU's own per-CPU block, read through GS inline in every raise.
// SAFETY: the promises of `CpuIdentity::gs_relative` (which include those
// of `CpuIdentity::new`):
// 1. Every CPU points its GS base at its own `PerCpu` block, whose `index`
//    (a u32 at `cpu::INDEX_OFFSET`, set before the base) is its dense index
//    (`cpu::bind_to_gs`), before anything on it can raise or report to the
//    dispatcher: the bootstrap processor before `init`, an application
//    processor first thing in `ap_main`. The blocks are static, the base is
//    never changed again (the kernel reloads no GS selector and runs no
//    `swapgs`: it has no user mode), and interrupt handlers run with it.
// 2. Each index is one CPU; interrupt handlers nest inside what they
//    interrupt and return to it.
// 3. A raise stays on its CPU: the scheduler skips its pass at the end of an
//    interrupt that came inside a raise (`strand::on_interrupt_exit`), so a
//    strand is never preempted or handed back there, a yield inside a raise
//    does nothing and a block or exit there stops the kernel; and a thread
//    context does not suspend inside a raise (`arch::thread_context`).
const CPU_IDENTITY: CpuIdentity = unsafe { CpuIdentity::gs_relative::<{ cpu::INDEX_OFFSET }>() };

/// The dispatcher's view of the machine: raises are grace-period read
/// sections. Its wait step is the kernel's `relax`: a waiting installer or
/// remover is outside every raise (both are refused inside one), so it
/// reports this CPU quiescent. A grace period that lasts a second is
/// reported on the console (and again each time the wait doubles).
const PLATFORM: Platform = Platform::per_cpu(CPU_IDENTITY, now_nanoseconds)
    .with_relax(relax)
    .with_grace_stall_report(GRACE_STALL_REPORT_NS, report_grace_stall);

/// How long an install or removal waits for a grace period before the wait
/// is reported.
pub const GRACE_STALL_REPORT_NS: u64 = 1_000_000_000;

/// Grace-period stall reports so far.
static GRACE_STALLS: AtomicU64 = AtomicU64::new(0);
/// The CPUs (below 64, as a bit mask) the last stall report waited for.
static LAST_GRACE_STALL_CPUS: AtomicU64 = AtomicU64::new(0);

/// The CPUs below 64 that the last grace-period stall report named, as a
/// bit mask (0: none reported yet).
pub fn last_grace_stall_cpus() -> u64 {
    LAST_GRACE_STALL_CPUS.load(Ordering::Relaxed)
}

/// Grace periods reported as stalled (see `GRACE_STALL_REPORT_NS`).
pub fn grace_stalls() -> u64 {
    GRACE_STALLS.load(Ordering::Relaxed)
}

/// Prints a grace period that has lasted long, naming the CPUs it waits
/// for: each is inside a raise that does not end, or spinning with
/// interrupts off outside the kernel's wait loops (the kernel's RCU stall
/// warning).
fn report_grace_stall(stall: &GraceStall<'_>) {
    GRACE_STALLS.fetch_add(1, Ordering::Relaxed);
    let mask = stall
        .awaited
        .cpus()
        .filter(|&cpu| cpu < 64)
        .fold(0u64, |mask, cpu| mask | 1 << cpu);
    LAST_GRACE_STALL_CPUS.store(mask, Ordering::Relaxed);
    struct Cpus<'a>(&'a GraceStall<'a>);
    impl core::fmt::Display for Cpus<'_> {
        fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for (position, cpu) in self.0.awaited.cpus().enumerate() {
                if position == 16 {
                    return formatter.write_str(", ...");
                }
                if position > 0 {
                    formatter.write_str(", ")?;
                }
                write!(formatter, "{cpu}")?;
            }
            Ok(())
        }
    }
    crate::kprintln!(
        "kernel: warning: event {}: a grace period has waited {} ms for cpu {} (inside a raise that does not end, or spinning with interrupts off)",
        stall.event,
        stall.waited_nanoseconds / 1_000_000,
        Cpus(stall)
    );
}

/// Tells the dispatcher that this CPU is quiescent if it is outside every
/// raise (ignored inside one, and before `init`). Called at every timer tick
/// and in the kernel's wait loops, so that removals waiting for a grace
/// period are not held up by a busy CPU.
#[inline]
pub fn quiescent_state() {
    if let Some(dispatcher) = DISPATCHER.get() {
        dispatcher.quiescent_state();
    }
}

/// One step of a kernel wait loop (for another CPU, a lock, a rendezvous):
/// reports this CPU quiescent (if it is outside every raise), so that a
/// removal on the CPU being waited for is not waiting for this one.
#[inline]
pub fn relax() {
    quiescent_state();
    core::hint::spin_loop();
}

/// Whether this CPU is inside a raise of the kernel's dispatcher: the
/// scheduler does not switch strands there.
#[inline]
pub fn inside_raise() -> bool {
    DISPATCHER.get().is_some_and(Dispatcher::inside_raise)
}

/// Halts this CPU until the next interrupt, marked idle for the
/// dispatcher's grace periods meanwhile (an idle CPU, whose tick may be
/// stopped, must not hold up removals). Every idle loop halts through here.
pub fn halt_until_interrupt() {
    let dispatcher = DISPATCHER.get();
    // Interrupts off from the mark to the halt (`sti; hlt` is atomic), so
    // that no interrupt can raise in between and leave the CPU halted
    // without the mark.
    cpu::disable_interrupts();
    if let Some(dispatcher) = dispatcher {
        dispatcher.enter_idle();
    }
    cpu::enable_interrupts_and_halt();
    if let Some(dispatcher) = dispatcher {
        dispatcher.leave_idle();
    }
}

/// The kernel's dispatcher (created by [`init`]).
pub fn dispatcher() -> &'static Dispatcher {
    DISPATCHER.get().expect("extensions::init ran")
}

/// Writes one console line for the `Console` interface and `print`'s default.
fn write_console_line(prefix: &str, text: &str) {
    console::with_console(|console| {
        let _ = console.write_str(prefix);
        let _ = console.write_str(text);
        let _ = console.write_str("\n");
    });
}

/// Sets the extension services up (bootstrap processor, once the CPU count
/// is known, before any extension is installed).
pub fn init(cpus: usize) -> Result<(), String> {
    let dispatcher = DISPATCHER.call_once(|| Dispatcher::new(PLATFORM, cpus));
    let attestation = Attestation::establish().map_err(|error| error.to_string())?;
    let certificate = attestation
        .certify(Provenance::TrustedByAssertion)
        .map_err(|error| error.to_string())?;
    let kernel_module = Module::new(
        "kernel",
        vec![
            Interface::new(CONSOLE, Arc::new(Console::new(write_console_line))),
            Interface::new(CLOCK, Arc::new(Clock::new(now_nanoseconds))),
        ],
        vec![],
    )
    .map_err(|error| error.to_string())?;
    let kernel_domain = Domain::create_from_module(kernel_module, certificate);
    let (print, print_owner) = dispatcher
        .event::<str, ()>(PRINT, |text: &str| write_console_line("", text))
        .default_policy(DefaultPolicy::Replaceable)
        .owner_domain(kernel_domain.id())
        .accounting(true)
        .authorize(|request| {
            if COMPILER_CHECKED.lock().contains(&request.domain) {
                Authorization::Accept
            } else {
                Authorization::Refuse("print takes handlers from compiler-checked domains only")
            }
        })
        .create();
    let names = NameServer::new();
    names
        .register(
            &kernel_domain,
            Interface::new(PRINT, Arc::new(print.clone())),
            require_compiler_checked(),
        )
        .map_err(|error| error.to_string())?;
    SERVICES.call_once(|| Services {
        attestation: Mutex::new(attestation),
        kernel_domain,
        names,
        _print_owner: print_owner,
        installed: Mutex::new(Vec::new()),
    });
    PRINT_EVENT.call_once(|| print);
    Ok(())
}

/// Raises `print` with one formatted line. Returns `false` (printing
/// nothing) before [`init`]; the caller then writes the line itself.
pub fn print(arguments: core::fmt::Arguments<'_>) -> bool {
    let Some(event) = PRINT_EVENT.get() else {
        return false;
    };
    let mut text = console::BoundedText::new();
    let _ = text.write_fmt(arguments);
    // A raise must stay on its CPU: no preemption while it runs.
    let were_enabled = cpu::disable_interrupts();
    event.raise(text.as_str());
    cpu::restore_interrupts(were_enabled);
    true
}

/// The provenance the build script established for `crate_name`.
fn provenance_of(crate_name: &str) -> Provenance {
    let checked = generated::EXTENSION_CRATES
        .iter()
        .any(|&(name, checked)| name == crate_name && checked);
    if checked {
        Provenance::CompilerChecked
    } else {
        Provenance::TrustedByAssertion
    }
}

/// Installs the compiled-in extension `name`: creates its domain, resolves
/// it against the kernel domain, installs its handlers (all or none).
pub fn install(name: &str) -> Result<(), String> {
    let services = SERVICES.get().ok_or("extensions::init has not run")?;
    if name != spindle_console_timestamps::NAME {
        return Err(format!("no extension named '{name}'"));
    }
    let module = spindle_console_timestamps::module().map_err(|error| error.to_string())?;
    let certificate = services
        .attestation
        .lock()
        .certify(provenance_of(TIMESTAMPS_CRATE))
        .map_err(|error| error.to_string())?;
    let mut domain = Domain::create_from_module(module, certificate);
    if domain.provenance() == Provenance::CompilerChecked {
        COMPILER_CHECKED.lock().push(domain.id());
    }
    resolve(&services.kernel_domain, &mut domain).map_err(|error| error.to_string())?;
    domain.check_resolved().map_err(|error| error.to_string())?;
    let timestamps = spindle_console_timestamps::install(&domain, &services.names, dispatcher())
        .map_err(|error| error.to_string())?;
    services.installed.lock().push(Installed {
        name: spindle_console_timestamps::NAME,
        domain,
        timestamps,
    });
    Ok(())
}

/// Uninstalls every installed extension (in reverse order), so that the
/// end-of-run report prints plain lines. Returns the failures.
pub fn uninstall_all() -> Vec<String> {
    let Some(services) = SERVICES.get() else {
        return Vec::new();
    };
    let installed = services.installed.lock();
    installed
        .iter()
        .rev()
        .filter_map(|extension| {
            extension
                .timestamps
                .uninstall()
                .err()
                .map(|error| format!("{}: {error}", extension.name))
        })
        .collect()
}

/// What each installed extension did.
pub fn installed() -> Vec<InstalledReport> {
    let Some(services) = SERVICES.get() else {
        return Vec::new();
    };
    services
        .installed
        .lock()
        .iter()
        .map(|extension| InstalledReport {
            name: extension.name,
            domain: extension.domain.id(),
            provenance: extension.domain.provenance(),
            handlers: extension.timestamps.extension().handler_ids().len(),
            lines: extension.timestamps.lines(),
            usage: dispatcher().usage(extension.domain.id()),
        })
        .collect()
}

/// Runs pending deferred handler calls (from the idle loop, outside any
/// raise). Returns how many ran.
pub fn run_deferred() -> usize {
    match DISPATCHER.get() {
        Some(dispatcher) if dispatcher.has_deferred() => dispatcher.run_deferred(),
        _ => 0,
    }
}
