//! The handler-churn stress test: handlers come and go on one CPU while the others raise, and every call is counted.
//!
//! The event `churn` takes a sequence number and sums its handlers' results
//! (`Combine::Reduce`), and each kind of handler adds a one in its own
//! 16-bit field of the sum:
//!
//! | field | handler | installed |
//! |---|---|---|
//! | bits 0..16 | the permanent handler | for the whole test |
//! | bits 16..32 | a single handler, guard: even sequence numbers only | by [`Churn::churn_step`], removed at once |
//! | bits 32..48 | each of the two handlers of an extension | by [`Churn::churn_step`], uninstalled at once |
//! | bits 48..64 | the default handler (policy `Always`) | always |
//!
//! So each raise ([`Churn::raise_step`]) reads from its one result what ran,
//! and checks it: the permanent and the default handler exactly once, the
//! single handler at most once and never for an odd number, the extension's
//! handlers both or neither. It adds what it saw to running totals; every
//! handler also counts its own calls. At the end the totals must agree (a
//! call that ran but was not combined, or was counted twice, makes them
//! differ), and no handler may have been called after its removal returned
//! (each handler checks a flag that the churner sets right after `remove`
//! or `uninstall` returns).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spindle_dispatch::{
    Authorization, Combine, DefaultPolicy, Dispatcher, Event, EventOwner, ExtensionInstallError,
    ExtensionPlan, Handler, HandlerHandle, InstallError, RemoveError,
};

use crate::BENCH_DOMAIN;

/// Width of each handler kind's field in a raise's result.
const FIELD_BITS: u32 = 16;
/// Mask of one field.
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// What the permanent handler adds.
const PERMANENT_ONE: u64 = 1;
/// What the churned single handler adds.
const SINGLE_ONE: u64 = 1 << FIELD_BITS;
/// What each handler of the churned extension adds.
const EXTENSION_ONE: u64 = 1 << (2 * FIELD_BITS);
/// What the default handler adds.
const DEFAULT_ONE: u64 = 1 << (3 * FIELD_BITS);
/// Handlers in the churned extension.
const EXTENSION_HANDLERS: u64 = 2;

/// A count kept by both sides.
#[derive(Default)]
struct Counters {
    raises: AtomicU64,
    permanent_calls: AtomicU64,
    default_calls: AtomicU64,
    single_calls_seen: AtomicU64,
    single_calls_counted: AtomicU64,
    extension_calls_seen: AtomicU64,
    extension_calls_counted: AtomicU64,
    wrong_permanent: AtomicU64,
    wrong_default: AtomicU64,
    guard_violations: AtomicU64,
    torn_extension: AtomicU64,
    called_after_removal: AtomicU64,
    single_installs: AtomicU64,
    extension_installs: AtomicU64,
}

/// What a churn run counted. [`ChurnReport::problems`] is zero when every
/// rule held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnReport {
    /// Raises made by the raising CPUs.
    pub raises: u64,
    /// Calls of the permanent handler (must equal `raises`).
    pub permanent_calls: u64,
    /// Calls of the default handler (must equal `raises`).
    pub default_calls: u64,
    /// Single-handler calls as the raises saw them in their results.
    pub single_calls_seen: u64,
    /// Single-handler calls as the handlers counted them.
    pub single_calls_counted: u64,
    /// Extension-handler calls as the raises saw them.
    pub extension_calls_seen: u64,
    /// Extension-handler calls as the handlers counted them.
    pub extension_calls_counted: u64,
    /// Raises that saw the permanent handler other than exactly once.
    pub wrong_permanent: u64,
    /// Raises that saw the default handler other than exactly once.
    pub wrong_default: u64,
    /// Raises where the single handler ran for an odd number (its guard
    /// refuses those) or more than once.
    pub guard_violations: u64,
    /// Raises that saw one of the extension's two handlers without the other.
    pub torn_extension: u64,
    /// Handler calls that began after the handler's removal had returned.
    pub called_after_removal: u64,
    /// Single handlers installed and removed.
    pub single_installs: u64,
    /// Two-handler extensions installed and uninstalled.
    pub extension_installs: u64,
}

impl ChurnReport {
    /// How many rules were broken (0 for a correct dispatcher): lost or
    /// doubled calls, calls after removal, guard violations, torn extensions.
    pub fn problems(&self) -> u64 {
        let mismatch = |left: u64, right: u64| left.abs_diff(right);
        mismatch(self.permanent_calls, self.raises)
            + mismatch(self.default_calls, self.raises)
            + mismatch(self.single_calls_seen, self.single_calls_counted)
            + mismatch(self.extension_calls_seen, self.extension_calls_counted)
            + self.wrong_permanent
            + self.wrong_default
            + self.guard_violations
            + self.torn_extension
            + self.called_after_removal
    }
}

/// Why a churn step failed.
#[derive(Debug)]
pub enum ChurnError {
    /// Installing a handler was refused.
    Install(InstallError),
    /// Installing the extension was refused.
    ExtensionInstall(ExtensionInstallError),
    /// Removing or uninstalling failed.
    Remove(RemoveError),
}

impl fmt::Display for ChurnError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChurnError::Install(error) => write!(formatter, "churn: {error}"),
            ChurnError::ExtensionInstall(error) => write!(formatter, "churn: {error}"),
            ChurnError::Remove(error) => write!(formatter, "churn: {error}"),
        }
    }
}

/// The stress test's event, its permanent handler and its counters.
pub struct Churn {
    dispatcher: Dispatcher,
    event: Event<u64, u64>,
    _owner: EventOwner<u64, u64>,
    _permanent: HandlerHandle,
    counters: Arc<Counters>,
}

impl Churn {
    /// Creates the event on `dispatcher` and installs the permanent handler.
    pub fn new(dispatcher: &Dispatcher) -> Result<Churn, ChurnError> {
        let counters = Arc::new(Counters::default());
        let default_counters = Arc::clone(&counters);
        let (event, owner) = dispatcher
            .event::<u64, u64>("churn", move |_sequence| {
                default_counters
                    .default_calls
                    .fetch_add(1, Ordering::Relaxed);
                DEFAULT_ONE
            })
            .combine(Combine::Reduce(u64::wrapping_add))
            .default_policy(DefaultPolicy::Always)
            .authorize(|request| {
                if request.domain == BENCH_DOMAIN {
                    Authorization::Accept
                } else {
                    Authorization::Refuse("only the churn test installs here")
                }
            })
            .create();
        let permanent_counters = Arc::clone(&counters);
        let permanent = event
            .install(
                BENCH_DOMAIN,
                Handler::new(move |_sequence: &u64| {
                    permanent_counters
                        .permanent_calls
                        .fetch_add(1, Ordering::Relaxed);
                    PERMANENT_ONE
                }),
            )
            .map_err(ChurnError::Install)?;
        Ok(Churn {
            dispatcher: dispatcher.clone(),
            event,
            _owner: owner,
            _permanent: permanent,
            counters,
        })
    }

    /// One raise with sequence number `sequence`, checked and counted. Call
    /// it in a loop on every raising CPU.
    pub fn raise_step(&self, sequence: u64) {
        let result = self.event.raise(&sequence);
        let field = |shift: u32| (result >> shift) & FIELD_MASK;
        let counters = &*self.counters;
        counters.raises.fetch_add(1, Ordering::Relaxed);
        if field(0) != 1 {
            counters.wrong_permanent.fetch_add(1, Ordering::Relaxed);
        }
        if field(3 * FIELD_BITS) != 1 {
            counters.wrong_default.fetch_add(1, Ordering::Relaxed);
        }
        let single = field(FIELD_BITS);
        if single > 1 || (single == 1 && !sequence.is_multiple_of(2)) {
            counters.guard_violations.fetch_add(1, Ordering::Relaxed);
        }
        counters
            .single_calls_seen
            .fetch_add(single, Ordering::Relaxed);
        let extension = field(2 * FIELD_BITS);
        if extension != 0 && extension != EXTENSION_HANDLERS {
            counters.torn_extension.fetch_add(1, Ordering::Relaxed);
        }
        counters
            .extension_calls_seen
            .fetch_add(extension, Ordering::Relaxed);
    }

    /// One churn cycle: installs a handler (even cycles: a single guarded
    /// handler; odd cycles: a two-handler extension), calls `while_installed`
    /// (the kernel spins a little there so raises meet the handler), then
    /// removes it and marks it removed. Call it in a loop on the churning CPU.
    pub fn churn_step(&self, cycle: u64, while_installed: impl FnOnce()) -> Result<(), ChurnError> {
        let removed = Arc::new(AtomicBool::new(false));
        if cycle.is_multiple_of(2) {
            let handle = self
                .event
                .install(
                    BENCH_DOMAIN,
                    self.counted_handler(&removed, SINGLE_ONE, |counters| {
                        &counters.single_calls_counted
                    })
                    .guard(|sequence: &u64| sequence.is_multiple_of(2)),
                )
                .map_err(ChurnError::Install)?;
            while_installed();
            handle.remove().map_err(ChurnError::Remove)?;
            removed.store(true, Ordering::SeqCst);
            self.counters
                .single_installs
                .fetch_add(1, Ordering::Relaxed);
        } else {
            let mut plan = ExtensionPlan::new(&self.dispatcher, BENCH_DOMAIN, "churn-pair");
            for _ in 0..EXTENSION_HANDLERS {
                plan.add(
                    &self.event,
                    self.counted_handler(&removed, EXTENSION_ONE, |counters| {
                        &counters.extension_calls_counted
                    }),
                );
            }
            let extension = plan.install().map_err(ChurnError::ExtensionInstall)?;
            while_installed();
            extension.uninstall().map_err(ChurnError::Remove)?;
            removed.store(true, Ordering::SeqCst);
            self.counters
                .extension_installs
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A handler that counts its calls in `counter`, notes calls after
    /// `removed` is set, and returns `one`.
    fn counted_handler(
        &self,
        removed: &Arc<AtomicBool>,
        one: u64,
        counter: fn(&Counters) -> &AtomicU64,
    ) -> Handler<u64, u64> {
        let counters = Arc::clone(&self.counters);
        let removed = Arc::clone(removed);
        Handler::new(move |_sequence: &u64| {
            if removed.load(Ordering::SeqCst) {
                counters
                    .called_after_removal
                    .fetch_add(1, Ordering::Relaxed);
            }
            counter(&counters).fetch_add(1, Ordering::Relaxed);
            one
        })
    }

    /// What was counted so far (call it once every CPU has stopped).
    pub fn report(&self) -> ChurnReport {
        let counters = &*self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        ChurnReport {
            raises: load(&counters.raises),
            permanent_calls: load(&counters.permanent_calls),
            default_calls: load(&counters.default_calls),
            single_calls_seen: load(&counters.single_calls_seen),
            single_calls_counted: load(&counters.single_calls_counted),
            extension_calls_seen: load(&counters.extension_calls_seen),
            extension_calls_counted: load(&counters.extension_calls_counted),
            wrong_permanent: load(&counters.wrong_permanent),
            wrong_default: load(&counters.wrong_default),
            guard_violations: load(&counters.guard_violations),
            torn_extension: load(&counters.torn_extension),
            called_after_removal: load(&counters.called_after_removal),
            single_installs: load(&counters.single_installs),
            extension_installs: load(&counters.extension_installs),
        }
    }

    /// The report's fields as (name, value) pairs, for printing records.
    pub fn fields(report: &ChurnReport) -> Vec<(&'static str, u64)> {
        alloc::vec![
            ("raises", report.raises),
            ("permanent_calls", report.permanent_calls),
            ("default_calls", report.default_calls),
            ("single_calls_seen", report.single_calls_seen),
            ("single_calls_counted", report.single_calls_counted),
            ("extension_calls_seen", report.extension_calls_seen),
            ("extension_calls_counted", report.extension_calls_counted),
            ("wrong_permanent", report.wrong_permanent),
            ("wrong_default", report.wrong_default),
            ("guard_violations", report.guard_violations),
            ("torn_extension", report.torn_extension),
            ("called_after_removal", report.called_after_removal),
            ("single_installs", report.single_installs),
            ("extension_installs", report.extension_installs),
            ("problems", report.problems()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_dispatch::Platform;
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    thread_local! {
        static CPU: Cell<usize> = const { Cell::new(0) };
    }

    fn current_cpu() -> usize {
        CPU.with(Cell::get)
    }

    const CPUS: usize = 4;

    fn dispatcher() -> Dispatcher {
        Dispatcher::new(
            Platform::new(current_cpu, || 0).with_relax(std::thread::yield_now),
            CPUS,
        )
    }

    #[test]
    fn handlers_churned_under_concurrent_raises_lose_and_double_nothing() {
        let dispatcher = dispatcher();
        let churn = Arc::new(Churn::new(&dispatcher).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let raisers: Vec<_> = (1..CPUS)
            .map(|cpu| {
                let churn = Arc::clone(&churn);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    CPU.with(|current| current.set(cpu));
                    let mut sequence = 0;
                    while !stop.load(Ordering::Relaxed) {
                        churn.raise_step(sequence);
                        sequence += 1;
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut cycle = 0;
        while Instant::now() < deadline {
            churn.churn_step(cycle, std::thread::yield_now).unwrap();
            cycle += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for raiser in raisers {
            raiser.join().unwrap();
        }
        let report = churn.report();
        assert_eq!(report.problems(), 0, "{report:?}");
        assert!(report.raises > 0 && report.single_installs > 0 && report.extension_installs > 0);
        assert_eq!(report.permanent_calls, report.raises);
        assert_eq!(
            report.single_installs + report.extension_installs,
            cycle,
            "{report:?}"
        );
    }

    #[test]
    fn the_checks_see_what_ran_in_a_single_thread() {
        let dispatcher = dispatcher();
        let churn = Churn::new(&dispatcher).unwrap();
        let raised = AtomicUsize::new(0);
        churn
            .churn_step(0, || {
                churn.raise_step(2); // the single handler's guard accepts
                churn.raise_step(3); // and refuses
                raised.fetch_add(2, Ordering::Relaxed);
            })
            .unwrap();
        churn
            .churn_step(1, || {
                churn.raise_step(5);
                raised.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        churn.raise_step(6);
        let report = churn.report();
        assert_eq!(report.raises, 4);
        assert_eq!(report.single_calls_seen, 1);
        assert_eq!(report.single_calls_counted, 1);
        assert_eq!(report.extension_calls_seen, 2);
        assert_eq!(report.extension_calls_counted, 2);
        assert_eq!(report.problems(), 0, "{report:?}");
    }

    #[test]
    fn a_report_with_a_broken_rule_counts_problems() {
        let mut report = ChurnReport {
            raises: 10,
            permanent_calls: 10,
            default_calls: 10,
            ..ChurnReport::default()
        };
        assert_eq!(report.problems(), 0);
        report.permanent_calls = 9; // one lost call
        report.called_after_removal = 2;
        report.single_calls_counted = 1; // one call nobody saw
        assert_eq!(report.problems(), 4);
        let fields = Churn::fields(&report);
        assert_eq!(fields.last(), Some(&("problems", 4)));
    }

    #[test]
    fn nobody_else_may_install_on_the_churn_event() {
        let dispatcher = dispatcher();
        let churn = Churn::new(&dispatcher).unwrap();
        let refused = churn.event.install(
            spindle_dispatch::DomainId::new(1),
            Handler::new(|_: &u64| 0),
        );
        assert!(matches!(refused, Err(InstallError::Refused { .. })));
    }
}
