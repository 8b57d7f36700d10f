//! Every call from the scheduler into the policy goes through here: under a recovery point (arch/recovery.rs), timed into `sched.event.<callback>`, and with a policy that faults quarantined and ejected.
//!
//! A policy that panics, raises a CPU exception, or runs past its time budget
//! (`budget_ms`; never returning is the limit case) is abandoned mid-call:
//! the call returns `None`, the policy is *quarantined* (no CPU calls it
//! again; it is never dropped, since its own locks may be held and its data
//! half written), and its ejection is requested. Until the ejection is
//! performed at the next scheduling pass, the scheduler runs on its own view
//! (a CPU whose `pick_next` faulted idles; a strand whose `unblock` was not
//! delivered is runnable in the kernel's table, and the hand-over to `rr`
//! comes from that table).
//!
//! A call that returns but took longer than its budget also has its policy
//! ejected (its answer is still used: it is a correct answer, late).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use spindle_sched_ext::Policy;

use super::swap;
use crate::arch::recovery::{self, Fault};
use crate::metrics::{self, PerCpuHistogram};

/// The policy callbacks, each with its own cost histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    /// `strand_created`.
    StrandCreated,
    /// `strand_exited`.
    StrandExited,
    /// `select_cpu` (where a waking strand goes).
    SelectCpu,
    /// SPIN's Unblock.
    Unblock,
    /// SPIN's Block.
    Block,
    /// SPIN's Checkpoint.
    Checkpoint,
    /// SPIN's Resume.
    Resume,
    /// `pick_next`.
    PickNext,
    /// The timer tick.
    Tick,
    /// `cpu_idle`.
    CpuIdle,
    /// `wants_wakeup` (which CPUs to interrupt).
    WantsWakeup,
    /// `export` (hand-over out).
    Export,
    /// `import` (hand-over in).
    Import,
    /// `take_for_directed_yield`.
    DirectedYield,
}

impl Callback {
    const ALL: [Callback; 14] = [
        Callback::StrandCreated,
        Callback::StrandExited,
        Callback::SelectCpu,
        Callback::Unblock,
        Callback::Block,
        Callback::Checkpoint,
        Callback::Resume,
        Callback::PickNext,
        Callback::Tick,
        Callback::CpuIdle,
        Callback::WantsWakeup,
        Callback::Export,
        Callback::Import,
        Callback::DirectedYield,
    ];

    /// The method's name.
    pub const fn name(self) -> &'static str {
        match self {
            Callback::StrandCreated => "strand_created",
            Callback::StrandExited => "strand_exited",
            Callback::SelectCpu => "select_cpu",
            Callback::Unblock => "unblock",
            Callback::Block => "block",
            Callback::Checkpoint => "checkpoint",
            Callback::Resume => "resume",
            Callback::PickNext => "pick_next",
            Callback::Tick => "tick",
            Callback::CpuIdle => "cpu_idle",
            Callback::WantsWakeup => "wants_wakeup",
            Callback::Export => "export",
            Callback::Import => "import",
            Callback::DirectedYield => "take_for_directed_yield",
        }
    }

    /// The name of its cost histogram.
    const fn histogram_name(self) -> &'static str {
        match self {
            Callback::StrandCreated => "sched.event.strand_created",
            Callback::StrandExited => "sched.event.strand_exited",
            Callback::SelectCpu => "sched.event.select_cpu",
            Callback::Unblock => "sched.event.unblock",
            Callback::Block => "sched.event.block",
            Callback::Checkpoint => "sched.event.checkpoint",
            Callback::Resume => "sched.event.resume",
            Callback::PickNext => "sched.event.pick_next",
            Callback::Tick => "sched.event.tick",
            Callback::CpuIdle => "sched.event.cpu_idle",
            Callback::WantsWakeup => "sched.event.wants_wakeup",
            Callback::Export => "sched.event.export",
            Callback::Import => "sched.event.import",
            Callback::DirectedYield => "sched.event.directed_yield",
        }
    }

    /// Hand-over callbacks handle every strand at once.
    const fn is_bulk(self) -> bool {
        matches!(self, Callback::Export | Callback::Import)
    }
}

/// How much longer than the others the hand-over callbacks may run.
const BULK_BUDGET_FACTOR: u64 = 10;

static HISTOGRAMS: [Once<&'static PerCpuHistogram>; Callback::ALL.len()] =
    [const { Once::new() }; Callback::ALL.len()];
static BUDGET_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// The budget in ticks of the CPU's timer (at least 2).
static BUDGET_TICKS: AtomicU64 = AtomicU64::new(u64::MAX);
/// Set when the running policy faulted; cleared when a new one is installed.
static QUARANTINED: AtomicBool = AtomicBool::new(false);
/// Faults so far (every CPU's, including those after the first).
pub static FAULTS: AtomicU64 = AtomicU64::new(0);

/// Registers the cost histograms and the callback budget (`budget_ns`,
/// with CPUs ticking at `tick_hz`).
pub fn init(budget_ns: u64, tick_hz: u64) {
    BUDGET_NS.store(budget_ns, Ordering::Relaxed);
    let ticks = (u128::from(budget_ns) * u128::from(tick_hz) / 1_000_000_000) as u64;
    BUDGET_TICKS.store(ticks.max(2), Ordering::Relaxed);
    for (callback, histogram) in Callback::ALL.iter().zip(HISTOGRAMS.iter()) {
        histogram.call_once(|| metrics::register(callback.histogram_name(), "ns"));
    }
}

/// The budget of `callback`: (ns, ticks).
fn budget(callback: Callback) -> (u64, u64) {
    let budget = BUDGET_NS.load(Ordering::Relaxed);
    let ticks = BUDGET_TICKS.load(Ordering::Relaxed);
    if callback.is_bulk() {
        (
            budget.saturating_mul(BULK_BUDGET_FACTOR),
            ticks.saturating_mul(BULK_BUDGET_FACTOR),
        )
    } else {
        (budget, ticks)
    }
}

/// A new policy is running: it starts out of quarantine.
pub fn policy_installed() {
    QUARANTINED.store(false, Ordering::Release);
}

/// Calls the running policy's `callback` (interrupts off): its answer, or
/// `None` if the policy is quarantined or faulted now.
pub fn call<R>(
    policy: &Arc<dyn Policy>,
    callback: Callback,
    work: impl FnOnce(&dyn Policy) -> R,
) -> Option<R> {
    if QUARANTINED.load(Ordering::Acquire) {
        return None;
    }
    match call_policy(policy, callback, work) {
        Ok(answer) => Some(answer),
        Err(reason) => {
            // No swap can have happened meanwhile: it needs this CPU at the
            // top of its scheduler.
            quarantine(swap::current_policy(), reason);
            None
        }
    }
}

/// Calls `policy`'s `callback` under a recovery point and times it; the
/// error is the ejection reason. Used directly for a policy that is not (or
/// not yet) the running one, i.e. in hand-overs.
pub fn call_policy<R>(
    policy: &Arc<dyn Policy>,
    callback: Callback,
    work: impl FnOnce(&dyn Policy) -> R,
) -> Result<R, &'static str> {
    let (budget, budget_ticks) = budget(callback);
    let entered = crate::kernel::nanoseconds_since_boot();
    let result = recovery::guarded(budget, budget_ticks, entered, || work(&**policy));
    let spent = crate::kernel::nanoseconds_since_boot().saturating_sub(entered);
    if let Some(histogram) = HISTOGRAMS[callback as usize].get() {
        histogram.record(spent);
    }
    // Late only if the CPU was seen running it for the budget's ticks too
    // (not merely descheduled by a hypervisor meanwhile).
    let late = spent > budget && recovery::ticks_in_last_call() >= budget_ticks;
    match result {
        Ok(answer) if !late => Ok(answer),
        Ok(answer) => {
            // Correct but late: used, and the policy is ejected.
            let reason = leak(format!(
                "overran its time budget in {} ({} > {})",
                callback.name(),
                duration_text(spent),
                duration_text(budget)
            ));
            swap::request_ejection(swap::current_policy(), reason);
            Ok(answer)
        }
        Err(fault) => {
            FAULTS.fetch_add(1, Ordering::Relaxed);
            // The policy is never dropped: a strong reference is leaked.
            core::mem::forget(Arc::clone(policy));
            Err(leak(match fault {
                Fault::Panicked => format!("panicked in {}", callback.name()),
                Fault::Overran => format!(
                    "never returned from {} (broken after its {} budget)",
                    callback.name(),
                    duration_text(budget)
                ),
                Fault::Exception(vector) => format!(
                    "raised CPU exception {vector} ({}) in {}",
                    crate::exceptions::exception_name(u64::from(vector)),
                    callback.name()
                ),
            }))
        }
    }
}

/// Quarantines the running policy `name` after a fault and asks for its
/// ejection (the first fault reports; later ones only count).
fn quarantine(name: &'static str, reason: &'static str) {
    if QUARANTINED.swap(true, Ordering::AcqRel) {
        return;
    }
    crate::kprintln!("kernel: policy {name} {reason}: quarantined, ejecting it");
    assert!(
        name != swap::FALLBACK_POLICY,
        "the fallback policy {name} faulted ({reason}); nothing is left to run strands"
    );
    swap::request_ejection(name, reason);
}

/// A reason that lives as long as the swap log (faults are rare: a policy
/// is quarantined after its first).
fn leak(reason: String) -> &'static str {
    alloc::boxed::Box::leak(reason.into_boxed_str())
}

/// `ns` for people: whole milliseconds when it is some, else microseconds.
fn duration_text(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else {
        format!("{} µs", ns / 1000)
    }
}
