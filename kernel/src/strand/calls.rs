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
use spindle_sched_ext::{DomainId, Policy, ProcessorClient, DEFAULT_DOMAIN};

use super::domains::MAX_DOMAINS;
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
    /// `processor_added` (an extension domain's client).
    ProcessorAdded,
    /// `revoke_requested` (an extension domain's client).
    RevokeRequested,
    /// `processor_revoked` (an extension domain's client).
    ProcessorRevoked,
}

impl Callback {
    const ALL: [Callback; 17] = [
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
        Callback::ProcessorAdded,
        Callback::RevokeRequested,
        Callback::ProcessorRevoked,
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
            Callback::ProcessorAdded => "processor_added",
            Callback::RevokeRequested => "revoke_requested",
            Callback::ProcessorRevoked => "processor_revoked",
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
            Callback::ProcessorAdded => "sched.event.processor_added",
            Callback::RevokeRequested => "sched.event.revoke_requested",
            Callback::ProcessorRevoked => "sched.event.processor_revoked",
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
/// Per domain: set when its policy (or client) faulted; the default
/// domain's is cleared when a new policy is installed.
static QUARANTINED: [AtomicBool; MAX_DOMAINS] = [const { AtomicBool::new(false) }; MAX_DOMAINS];
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
    QUARANTINED[usize::from(DEFAULT_DOMAIN.0)].store(false, Ordering::Release);
}

/// Whether `domain`'s extension code faulted (it is no longer called).
pub fn quarantined(domain: DomainId) -> bool {
    QUARANTINED
        .get(usize::from(domain.0))
        .is_none_or(|flag| flag.load(Ordering::Acquire))
}

/// A policy and the domain it schedules for: the target of a policy call.
#[derive(Clone)]
pub struct Owner {
    /// The domain (the default one, or an extension domain).
    pub domain: DomainId,
    /// Its policy.
    pub policy: Arc<dyn Policy>,
}

/// Calls the domain's policy's `callback` (interrupts off): its answer, or
/// `None` if the domain is quarantined or faulted now.
pub fn call<R>(
    owner: &Owner,
    callback: Callback,
    work: impl FnOnce(&dyn Policy) -> R,
) -> Option<R> {
    call_object(owner.domain, &owner.policy, callback, |policy| work(policy))
}

/// Calls an extension domain's processor client like [`call`].
pub fn call_client<R>(
    domain: DomainId,
    client: &Arc<dyn ProcessorClient>,
    callback: Callback,
    work: impl FnOnce(&dyn ProcessorClient) -> R,
) -> Option<R> {
    call_object(domain, client, callback, |client| work(client))
}

fn call_object<T: ?Sized, R>(
    domain: DomainId,
    object: &Arc<T>,
    callback: Callback,
    work: impl FnOnce(&T) -> R,
) -> Option<R> {
    if quarantined(domain) {
        return None;
    }
    match call_policy(domain, object, callback, work) {
        Ok(answer) => Some(answer),
        Err(reason) => {
            // No swap can have happened meanwhile: it needs this CPU at the
            // top of its scheduler.
            quarantine(domain, reason);
            None
        }
    }
}

/// Calls `object`'s `callback` (extension code of `domain`) under a
/// recovery point and times it; the error is the ejection reason. Used
/// directly for a policy that is not (or not yet) the running one, i.e. in
/// hand-overs.
pub fn call_policy<T: ?Sized, R>(
    domain: DomainId,
    object: &Arc<T>,
    callback: Callback,
    work: impl FnOnce(&T) -> R,
) -> Result<R, &'static str> {
    // The fallback is never broken off for time: nothing could replace it,
    // and under a hypervisor a call can wait long for a lock whose holder's
    // virtual CPU is not running (CI saw rr abandoned in `checkpoint` at
    // -smp 4 under PVM, which stopped the kernel). Panics and exceptions
    // still end its calls.
    let fallback = domain == DEFAULT_DOMAIN && swap::current_policy() == swap::FALLBACK_POLICY;
    let (budget, budget_ticks) = if fallback {
        (u64::MAX, u64::MAX)
    } else {
        budget(callback)
    };
    let entered = crate::kernel::nanoseconds_since_boot();
    let result = recovery::guarded(budget, budget_ticks, entered, || work(&**object));
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
            eject(domain, reason);
            Ok(answer)
        }
        Err(fault) => {
            FAULTS.fetch_add(1, Ordering::Relaxed);
            // The policy is never dropped: a strong reference is leaked.
            core::mem::forget(Arc::clone(object));
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

/// Quarantines `domain` after a fault and asks for its ejection (the first
/// fault reports; later ones only count).
fn quarantine(domain: DomainId, reason: &'static str) {
    let Some(flag) = QUARANTINED.get(usize::from(domain.0)) else {
        return;
    };
    if flag.swap(true, Ordering::AcqRel) {
        return;
    }
    if domain == DEFAULT_DOMAIN {
        let name = swap::current_policy();
        crate::kprintln!("kernel: policy {name} {reason}: quarantined, ejecting it");
        assert!(
            name != swap::FALLBACK_POLICY,
            "the fallback policy {name} faulted ({reason}); nothing is left to run strands"
        );
    } else {
        crate::kprintln!("kernel: {domain} {reason}: quarantined, ejecting it");
    }
    eject(domain, reason);
}

/// Asks for the ejection of `domain`'s policy (the default domain's: a swap
/// to the fallback; an extension domain's: its strands and processors go
/// to the default domain).
pub fn eject(domain: DomainId, reason: &'static str) {
    if domain == DEFAULT_DOMAIN {
        swap::request_ejection(swap::current_policy(), reason);
    } else {
        swap::request_domain_ejection(domain, reason);
    }
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
