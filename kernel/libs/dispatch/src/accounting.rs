//! Time accounting per domain, handler budgets and overrun reports.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::identity::{DomainId, HandlerId};
use crate::padded::CachePadded;
use crate::platform::Platform;

/// What a domain's measured handler calls have cost so far, summed over CPUs
/// and events. Only measured calls count: calls of handlers with a budget and
/// all calls on events whose owner switched accounting on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainUsage {
    /// Nanoseconds spent in the domain's measured handler calls.
    pub nanoseconds: u64,
    /// Number of measured calls.
    pub calls: u64,
    /// Number of those calls that ran past their handler's budget.
    pub overruns: u64,
}

/// A handler call that ran longer than its budget, as reported to the
/// event's owner (after the call: a handler cannot be preempted by the
/// dispatcher; the kernel's scheduler ejects extensions from these reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrunReport {
    /// The domain that installed the handler.
    pub domain: DomainId,
    /// The event's name.
    pub event: &'static str,
    /// The handler.
    pub handler: HandlerId,
    /// How long the call took, in nanoseconds.
    pub elapsed_nanoseconds: u64,
    /// The handler's budget, in nanoseconds.
    pub budget_nanoseconds: u64,
    /// The CPU that ran the call.
    pub cpu: usize,
    /// Whether it was a deferred (asynchronous) call.
    pub deferred: bool,
}

/// The owner's overrun callback. It runs on the CPU that made the call, right
/// after it, inside the raise: it must be short and must not install or
/// remove handlers (record the report and act on it later).
pub(crate) type OverrunCallback = Arc<dyn Fn(&OverrunReport) + Send + Sync>;

/// One CPU's share of a domain's counters.
#[derive(Default)]
struct UsageCounters {
    nanoseconds: AtomicU64,
    calls: AtomicU64,
    overruns: AtomicU64,
}

/// A domain's usage counters, one cache line per CPU so that charging never
/// writes a line another CPU writes.
pub(crate) struct DomainAccount {
    domain: DomainId,
    per_cpu: Box<[CachePadded<UsageCounters>]>,
}

impl DomainAccount {
    /// Zeroed counters for `domain` on `cpus` CPUs.
    pub(crate) fn new(domain: DomainId, cpus: usize) -> DomainAccount {
        DomainAccount {
            domain,
            per_cpu: (0..cpus)
                .map(|_| CachePadded(UsageCounters::default()))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        }
    }

    /// The domain these counters belong to.
    pub(crate) fn domain(&self) -> DomainId {
        self.domain
    }

    /// Adds one call of `elapsed` nanoseconds on `cpu` (an overrun if
    /// `overrun`).
    #[inline]
    fn charge(&self, cpu: usize, elapsed: u64, overrun: bool) {
        if let Some(counters) = self.per_cpu.get(cpu) {
            counters.nanoseconds.fetch_add(elapsed, Ordering::Relaxed);
            counters.calls.fetch_add(1, Ordering::Relaxed);
            if overrun {
                counters.overruns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The sums over all CPUs (each counter read once, so a sum taken during
    /// calls may lag them by the calls in flight).
    pub(crate) fn usage(&self) -> DomainUsage {
        self.per_cpu
            .iter()
            .fold(DomainUsage::default(), |total, counters| DomainUsage {
                nanoseconds: total
                    .nanoseconds
                    .saturating_add(counters.nanoseconds.load(Ordering::Relaxed)),
                calls: total
                    .calls
                    .saturating_add(counters.calls.load(Ordering::Relaxed)),
                overruns: total
                    .overruns
                    .saturating_add(counters.overruns.load(Ordering::Relaxed)),
            })
    }
}

/// How to measure one handler's calls. A handler without a budget on an event
/// without accounting has none, and its calls never read the clock.
pub(crate) struct Measurement {
    /// Where the time goes.
    pub(crate) account: Arc<DomainAccount>,
    /// The handler's budget in nanoseconds, if it has one.
    pub(crate) budget_nanoseconds: Option<u64>,
    /// The owner's overrun callback, if any.
    pub(crate) on_overrun: Option<OverrunCallback>,
    /// The event's name, for reports.
    pub(crate) event: &'static str,
    /// The handler, for reports.
    pub(crate) handler: HandlerId,
}

impl Measurement {
    /// Calls `call`, timing it with the platform clock, charging the time to
    /// the account and reporting an overrun of the budget.
    #[inline]
    pub(crate) fn call<T>(
        &self,
        platform: &Platform,
        cpu: usize,
        deferred: bool,
        call: impl FnOnce() -> T,
    ) -> T {
        let start = (platform.now_nanoseconds)();
        let result = call();
        let elapsed = (platform.now_nanoseconds)().saturating_sub(start);
        self.record(cpu, deferred, elapsed);
        result
    }

    /// Charges one call of `elapsed` nanoseconds and reports it if over budget.
    fn record(&self, cpu: usize, deferred: bool, elapsed: u64) {
        let overrun_budget = self.budget_nanoseconds.filter(|&budget| elapsed > budget);
        self.account.charge(cpu, elapsed, overrun_budget.is_some());
        if let (Some(budget_nanoseconds), Some(on_overrun)) = (overrun_budget, &self.on_overrun) {
            on_overrun(&OverrunReport {
                domain: self.account.domain(),
                event: self.event,
                handler: self.handler,
                elapsed_nanoseconds: elapsed,
                budget_nanoseconds,
                cpu,
                deferred,
            });
        }
    }
}
