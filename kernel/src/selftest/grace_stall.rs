//! `selftest=grace-stall`: the kernel's grace-period stall warning, end to
//! end. A handler on CPU 1 holds its raise for 1.5 s while CPU 0 installs a
//! handler on the same event: the install must wait for the raise (the
//! grace period), the wait must be reported on the console after a second,
//! naming CPU 1, and the install must complete once the raise ends.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use spindle_dispatch::{DomainId, Event, Handler};

use crate::arch::{cpu, smp};
use crate::console;
use crate::extensions;
use crate::kernel::nanoseconds_since_boot;

/// How long the handler on CPU 1 holds its raise: past the report threshold.
const HOLD_NS: u64 = extensions::GRACE_STALL_REPORT_NS + 500_000_000;
/// How long CPU 0 waits for CPU 1 to enter the handler, and to finish.
const START_TIMEOUT_NS: u64 = 5_000_000_000;
/// The domain the self-test installs its handlers for.
const SELFTEST_DOMAIN: DomainId = DomainId(0x5e1f);

static EVENT: Once<Event<u64, u64>> = Once::new();
/// Set by the holding handler once it runs.
static INSIDE: AtomicBool = AtomicBool::new(false);
/// Until when (ns since boot) the holding handler spins.
static HOLD_UNTIL: AtomicU64 = AtomicU64::new(0);

/// CPU 1's work: one raise, which the holding handler keeps open.
fn raise_and_hold() {
    if let Some(event) = EVENT.get() {
        event.raise(&1);
    }
}

/// Runs the self-test; returns the problems found.
pub fn grace_stall() -> Vec<String> {
    let mut problems = Vec::new();
    if cpu::cpus_found() < 2 || !cpu::per_cpu(1).online.load(Ordering::Acquire) {
        problems.push(String::from("grace-stall needs at least 2 CPUs"));
        return problems;
    }
    let dispatcher = extensions::dispatcher();
    if !dispatcher.uses_grace_periods() {
        problems.push(String::from("the dispatcher does not use grace periods"));
        return problems;
    }
    let (event, _owner) = dispatcher
        .event::<u64, u64>("selftest.grace_stall", |value| *value)
        .accept_all()
        .create();
    let holding = event.install(
        SELFTEST_DOMAIN,
        Handler::new(|value: &u64| {
            if *value == 1 {
                INSIDE.store(true, Ordering::Release);
                while nanoseconds_since_boot() < HOLD_UNTIL.load(Ordering::Acquire) {
                    core::hint::spin_loop();
                }
            }
            *value
        }),
    );
    let holding = match holding {
        Ok(handle) => handle,
        Err(error) => {
            problems.push(format!("installing the holding handler: {error:?}"));
            return problems;
        }
    };
    let event = EVENT.call_once(|| event);
    let reports_before = extensions::grace_stalls();
    HOLD_UNTIL.store(nanoseconds_since_boot() + HOLD_NS, Ordering::Release);
    let Some(posted) = smp::post(1, raise_and_hold) else {
        problems.push(String::from("cpu 1 could not be started"));
        return problems;
    };
    let start_deadline = nanoseconds_since_boot() + START_TIMEOUT_NS;
    while !INSIDE.load(Ordering::Acquire) && nanoseconds_since_boot() < start_deadline {
        core::hint::spin_loop();
    }
    if !INSIDE.load(Ordering::Acquire) {
        problems.push(String::from("cpu 1 never entered the holding handler"));
    }
    // The install publishes a new handler list and waits for CPU 1's raise.
    let started = nanoseconds_since_boot();
    let installed = event.install(SELFTEST_DOMAIN, Handler::new(|value: &u64| *value + 1));
    let waited = nanoseconds_since_boot() - started;
    if !smp::wait_done(posted, START_TIMEOUT_NS) {
        problems.push(String::from("cpu 1's raise did not end"));
    }
    let reports = extensions::grace_stalls() - reports_before;
    let reported_cpus = extensions::last_grace_stall_cpus();
    match installed {
        Ok(handle) => {
            if let Err(error) = handle.remove() {
                problems.push(format!("removing the second handler: {error:?}"));
            }
        }
        Err(error) => problems.push(format!("the install during the raise failed: {error:?}")),
    }
    if let Err(error) = holding.remove() {
        problems.push(format!("removing the holding handler: {error:?}"));
    }
    if waited < extensions::GRACE_STALL_REPORT_NS {
        problems.push(format!(
            "the install waited {} ms, less than the raise it had to wait for",
            waited / 1_000_000
        ));
    }
    if reports == 0 {
        problems.push(String::from("the stalled grace period was not reported"));
    }
    if reported_cpus != 1 << 1 {
        problems.push(format!(
            "the report named CPUs {reported_cpus:#b}, not CPU 1 alone"
        ));
    }
    console::with_console(|console| {
        console::write_scalar_u64(console, "grace_stall.waited_ms", waited / 1_000_000);
        console::write_scalar_u64(console, "grace_stall.reports", reports);
    });
    problems
}
