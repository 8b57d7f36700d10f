//! `timestamps`, a demonstration extension: every console line gets the time since boot, as Linux's `printk` does.
//!
//! The whole path of an extension, in one page:
//!
//! 1. [`module`] declares what the extension imports: the kernel's
//!    [`Console`] and [`Clock`] (by name and type). The kernel creates a
//!    domain from it (`Domain::create_from_module`), with the provenance its
//!    build script established: this crate is `#![forbid(unsafe_code)]`, so
//!    its domain is compiler-checked.
//! 2. The kernel resolves the domain against the kernel domain (a missing or
//!    mistyped import is refused there).
//! 3. [`install`] looks up the console's `print` event in the name server;
//!    the console's authorization procedure lets only compiler-checked
//!    domains have it. It then installs one handler that replaces `print`'s
//!    default, as an extension: all or nothing.
//! 4. Every line printed afterwards is raised as `print`, reaches the
//!    handler, and is written as `[   12.345678] text`.
//! 5. [`Timestamps::uninstall`] restores the default in one step.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use spindle_dispatch::{
    Dispatcher, Extension, ExtensionInstallError, ExtensionPlan, Handler, RemoveError,
};
use spindle_domains::{Domain, Import, ImportError, LookupError, Module, ModuleError, NameServer};
use spindle_services::{Clock, Console, PrintEvent, CLOCK, CONSOLE, PRINT};

/// The extension's name (its module's and its handlers').
pub const NAME: &str = "timestamps";
/// What the extension does, in one line (for `cargo spindle list`).
pub const DESCRIPTION: &str =
    "prefixes every console line with the time since boot (replaces print's default handler)";
/// Nanoseconds in a second and in a microsecond.
const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;
const NANOSECONDS_PER_MICROSECOND: u64 = 1_000;
/// Room for `[ssssss.uuuuuu] `.
const PREFIX_CAPACITY: usize = 32;

/// The extension's module: no exports; imports the console and the clock.
pub fn module() -> Result<Module, ModuleError> {
    Module::new(
        NAME,
        vec![],
        vec![Import::of::<Console>(CONSOLE), Import::of::<Clock>(CLOCK)],
    )
}

/// Why the extension could not be installed.
#[derive(Debug)]
pub enum TimestampsError {
    /// An import is not bound (the domain was not resolved) or has another type.
    Import(ImportError),
    /// The name server refused the `print` event (or nobody registered it).
    Lookup(LookupError),
    /// The `print` event's owner refused the handler.
    Install(ExtensionInstallError),
}

impl fmt::Display for TimestampsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimestampsError::Import(error) => write!(formatter, "{NAME}: {error}"),
            TimestampsError::Lookup(error) => write!(formatter, "{NAME}: {error}"),
            TimestampsError::Install(error) => write!(formatter, "{NAME}: {error}"),
        }
    }
}

/// The installed extension.
pub struct Timestamps {
    extension: Extension,
    lines: Arc<AtomicU64>,
}

impl Timestamps {
    /// Lines timestamped so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Removes the handler; `print` writes plain lines again.
    pub fn uninstall(&self) -> Result<(), RemoveError> {
        self.extension.uninstall()
    }

    /// The installed extension (its domain, its handlers).
    pub fn extension(&self) -> &Extension {
        &self.extension
    }
}

/// Installs the extension for `domain` (created from [`module`] and
/// resolved): looks up `print` in `names` and replaces its default.
pub fn install(
    domain: &Domain,
    names: &NameServer,
    dispatcher: &Dispatcher,
) -> Result<Timestamps, TimestampsError> {
    let console = domain
        .import::<Console>(CONSOLE)
        .map_err(TimestampsError::Import)?;
    let clock = domain
        .import::<Clock>(CLOCK)
        .map_err(TimestampsError::Import)?;
    let print = names
        .lookup::<PrintEvent>(PRINT, &domain.importer())
        .map_err(TimestampsError::Lookup)?;
    let lines = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&lines);
    let mut plan = ExtensionPlan::new(dispatcher, domain.id(), NAME);
    plan.add(
        &print,
        Handler::new(move |text: &str| {
            let mut prefix = Prefix::default();
            let _ = write_timestamp(&mut prefix, clock.now_nanoseconds());
            console.write_line(prefix.as_str(), text);
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .replacing_default(),
    );
    let extension = plan.install().map_err(TimestampsError::Install)?;
    Ok(Timestamps { extension, lines })
}

/// Writes `[seconds.microseconds] ` with the seconds right-aligned in 5 columns.
fn write_timestamp(output: &mut impl Write, nanoseconds: u64) -> fmt::Result {
    write!(
        output,
        "[{:>5}.{:06}] ",
        nanoseconds / NANOSECONDS_PER_SECOND,
        nanoseconds % NANOSECONDS_PER_SECOND / NANOSECONDS_PER_MICROSECOND
    )
}

/// A small stack buffer for the prefix (a `print` handler may run in an
/// interrupt handler, so it allocates nothing).
#[derive(Default)]
struct Prefix {
    bytes: [u8; PREFIX_CAPACITY],
    length: usize,
}

impl Prefix {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }
}

impl Write for Prefix {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.length + text.len();
        if end > PREFIX_CAPACITY {
            return Err(fmt::Error);
        }
        self.bytes[self.length..end].copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_dispatch::{Authorization, Platform};
    use spindle_domains::{
        require_compiler_checked, resolve, Attestation, Interface, Provenance, ResolveError,
    };
    use std::sync::{Mutex, OnceLock};

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static NOW: AtomicU64 = AtomicU64::new(0);

    fn write_line(prefix: &str, text: &str) {
        LINES.lock().unwrap().push(format!("{prefix}{text}"));
    }

    fn attestation() -> &'static Mutex<Attestation> {
        static AUTHORITY: OnceLock<Mutex<Attestation>> = OnceLock::new();
        AUTHORITY.get_or_init(|| Mutex::new(Attestation::establish().unwrap()))
    }

    /// The kernel side, as the kernel sets it up.
    struct Kernel {
        dispatcher: Dispatcher,
        domain: Domain,
        names: NameServer,
        print: PrintEvent,
    }

    fn kernel() -> Kernel {
        let dispatcher = Dispatcher::new(Platform::new(|| 0, || 0), 1);
        let certificate = attestation()
            .lock()
            .unwrap()
            .certify(Provenance::TrustedByAssertion)
            .unwrap();
        let domain = Domain::create_from_module(
            Module::new(
                "kernel",
                vec![
                    Interface::new(CONSOLE, Arc::new(Console::new(write_line))),
                    Interface::new(CLOCK, Arc::new(Clock::new(|| NOW.load(Ordering::Relaxed)))),
                ],
                vec![],
            )
            .unwrap(),
            certificate,
        );
        let (print, _owner) = dispatcher
            .event::<str, ()>(PRINT, |text: &str| write_line("", text))
            .default_policy(spindle_dispatch::DefaultPolicy::Replaceable)
            .authorize(|_request| Authorization::Accept)
            .create();
        let names = NameServer::new();
        names
            .register(
                &domain,
                Interface::new(PRINT, Arc::new(print.clone())),
                require_compiler_checked(),
            )
            .unwrap();
        Kernel {
            dispatcher,
            domain,
            names,
            print,
        }
    }

    fn extension_domain(provenance: Provenance) -> Domain {
        let certificate = attestation().lock().unwrap().certify(provenance).unwrap();
        Domain::create_from_module(module().unwrap(), certificate)
    }

    #[test]
    fn lines_are_timestamped_while_installed_and_plain_after() {
        let kernel = kernel();
        let mut domain = extension_domain(Provenance::CompilerChecked);
        resolve(&kernel.domain, &mut domain).unwrap();
        domain.check_resolved().unwrap();
        kernel.print.raise("before");
        let timestamps = install(&domain, &kernel.names, &kernel.dispatcher).unwrap();
        NOW.store(12_345_678_901, Ordering::Relaxed);
        kernel.print.raise("during");
        assert_eq!(timestamps.lines(), 1);
        timestamps.uninstall().unwrap();
        kernel.print.raise("after");
        let lines = LINES.lock().unwrap();
        let ours: Vec<&String> = lines
            .iter()
            .filter(|line| {
                line.ends_with("before") || line.ends_with("during") || line.ends_with("after")
            })
            .collect();
        assert_eq!(ours, ["before", "[   12.345678] during", "after"]);
    }

    #[test]
    fn a_domain_trusted_only_by_assertion_cannot_get_print() {
        let kernel = kernel();
        let mut domain = extension_domain(Provenance::TrustedByAssertion);
        resolve(&kernel.domain, &mut domain).unwrap();
        let refused = install(&domain, &kernel.names, &kernel.dispatcher);
        assert!(matches!(
            refused,
            Err(TimestampsError::Lookup(LookupError::Refused { .. }))
        ));
    }

    #[test]
    fn an_unresolved_domain_cannot_install() {
        let kernel = kernel();
        let domain = extension_domain(Provenance::CompilerChecked);
        let refused = install(&domain, &kernel.names, &kernel.dispatcher);
        assert!(matches!(refused, Err(TimestampsError::Import(_))));
    }

    #[test]
    fn a_kernel_exporting_the_clock_with_another_type_is_refused_at_resolve() {
        let certificate = attestation()
            .lock()
            .unwrap()
            .certify(Provenance::TrustedByAssertion)
            .unwrap();
        let wrong = Domain::create_from_module(
            Module::new(
                "kernel",
                vec![Interface::new(CLOCK, Arc::new(0u64))],
                vec![],
            )
            .unwrap(),
            certificate,
        );
        let mut domain = extension_domain(Provenance::CompilerChecked);
        assert!(matches!(
            resolve(&wrong, &mut domain),
            Err(ResolveError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn the_timestamp_has_seconds_and_microseconds() {
        let mut prefix = Prefix::default();
        write_timestamp(&mut prefix, 1_000_999).unwrap();
        assert_eq!(prefix.as_str(), "[    0.001000] ");
        let mut prefix = Prefix::default();
        write_timestamp(&mut prefix, 86_400 * NANOSECONDS_PER_SECOND).unwrap();
        assert_eq!(prefix.as_str(), "[86400.000000] ");
    }
}
