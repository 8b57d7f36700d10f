//! Live swaps and ejection: the running policy is replaced in one step while strands run, with every other CPU held at a rendezvous.
//!
//! A swap is *requested* (by the `swap=` schedule on CPU 0's tick, or by
//! the scheduler when it refuses a policy's answer or the watchdog finds a
//! runnable strand left waiting too long) and *performed* by the first CPU
//! that enters the scheduler afterwards:
//!
//! 1. It stops every other CPU: each gets a stop request and an IPI, and
//!    acknowledges at the top of its scheduler (`rendezvous`), where it
//!    holds no lock and is inside no policy call (policy calls run with
//!    interrupts off, so a CPU that takes the IPI has finished its call).
//! 2. It builds the hand-over: for a scheduled swap, the old policy's
//!    `export`, checked against the kernel's own strand table (every live
//!    strand exactly once, in the state the kernel knows); for an ejection,
//!    or when the export does not match, the kernel's view (state, affinity,
//!    parameters, CPU time) — a broken policy is never trusted with it.
//! 3. The new policy imports it (all or nothing). On success it becomes the
//!    running policy; on refusal the old one stays (a scheduled swap) and the
//!    refusal is logged.
//! 4. It releases the other CPUs, which continue with the new policy, and
//!    records the pause (`sched.swap_pause`).
//!
//! Running strands stay where they are; their next Checkpoint goes to the
//! new policy. Nothing is lost: the hand-over holds every strand the kernel
//! holds.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use spindle_sched_ext::{
    Context, CpuId, DomainId, ExportedStrand, PolicyInfo, StrandSpec, StrandState, DEFAULT_DOMAIN,
};

use super::calls::{self, Callback, Owner};
use super::{
    domain_of, domains, effective_affinity, kick, policy_context, Strand, BLOCKED, COUNTERS,
    POLICY, RUNNABLE, RUNNING, STRANDS,
};
use crate::arch::{cpu, tsc};
use crate::metrics::{self, PerCpuHistogram};
use crate::sync::{irq_mutex, IrqMutex};

/// The policy an ejected one is replaced by.
pub const FALLBACK_POLICY: &str = "rr";
/// How often CPU 0's tick runs the watchdog.
const WATCHDOG_SCAN_NS: u64 = 10_000_000;
/// How long the performing CPU waits for the others to stop.
const STOP_TIMEOUT_NS: u64 = 2_000_000_000;

/// One performed (or refused) swap.
#[derive(Clone, Copy, Debug)]
pub struct SwapRecord {
    /// The policy replaced.
    pub from: &'static str,
    /// The policy asked for.
    pub to: &'static str,
    /// When, in nanoseconds since the first strand was created.
    pub at_ns: u64,
    /// How long every CPU was held.
    pub pause_ns: u64,
    /// Strands handed over.
    pub strands: usize,
    /// Why the old policy was ejected (`None` for a scheduled swap).
    pub ejection: Option<&'static str>,
    /// Whether the hand-over came from the kernel's view rather than the
    /// old policy's export.
    pub kernel_view: bool,
    /// Why the swap did not happen, if it did not.
    pub failed: Option<&'static str>,
}

/// A requested swap.
#[derive(Clone, Copy)]
struct Request {
    to: &'static str,
    /// Only act if this policy is still the running one (ejections).
    from: Option<&'static str>,
    ejection: Option<&'static str>,
}

static PENDING: AtomicBool = AtomicBool::new(false);
/// CPUs are changing hands, or an extension domain is to be ejected
/// (domains.rs): done at the next rendezvous.
static REALLOCATE: AtomicBool = AtomicBool::new(false);
static STOPPING: AtomicBool = AtomicBool::new(false);
static OWNER: AtomicBool = AtomicBool::new(false);
static EPOCH: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
static STOP_REQUESTED: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];
static STOP_ACKNOWLEDGED: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];
static REQUEST: IrqMutex<Option<Request>> = irq_mutex(None);
static LOG: IrqMutex<Vec<SwapRecord>> = irq_mutex(Vec::new());
static CURRENT: IrqMutex<&'static str> = irq_mutex(FALLBACK_POLICY);
static SCHEDULE: IrqMutex<Vec<(u64, &'static str)>> = irq_mutex(Vec::new());
static WATCHDOG_NS: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_SCAN: AtomicU64 = AtomicU64::new(0);
/// When the first strand was created (0: not yet); swap times count from it.
static START: AtomicU64 = AtomicU64::new(0);
static PAUSE: Once<&'static PerCpuHistogram> = Once::new();
/// `sched.realloc_pause`: how long CPUs were held to change hands.
static REALLOC_PAUSE: Once<&'static PerCpuHistogram> = Once::new();

/// Records the starting policy, the `swap=` schedule (offsets from the
/// first strand's creation) and the watchdog bound.
pub fn init(policy: &'static str, mut schedule: Vec<(u64, &'static str)>, watchdog_ns: u64) {
    *CURRENT.lock() = policy;
    schedule.sort_by_key(|&(at, _)| at);
    *SCHEDULE.lock() = schedule;
    WATCHDOG_NS.store(watchdog_ns, Ordering::Relaxed);
    PAUSE.call_once(|| metrics::register("sched.swap_pause", "ns"));
    REALLOC_PAUSE.call_once(|| metrics::register("sched.realloc_pause", "ns"));
}

/// The name of the running policy.
pub fn current_policy() -> &'static str {
    *CURRENT.lock()
}

/// The swaps so far.
pub fn swap_log() -> Vec<SwapRecord> {
    LOG.lock().clone()
}

/// Notes the creation of the first strand: the clock of `swap=` starts.
pub fn note_first_strand() {
    let now = crate::kernel::nanoseconds_since_boot().max(1);
    let _ = START.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
}

/// The policy `name` from the catalogue or the broken catalogue (the
/// latter for the ejection tests).
pub fn find_policy(name: &str) -> Option<&'static PolicyInfo> {
    spindle_sched_ext::find(name).or_else(|| {
        spindle_sched_ext::broken::broken_catalogue()
            .iter()
            .find(|info| info.name == name)
    })
}

/// Asks for the running policy to be replaced by the fallback, because it
/// `reason`. Ignored if `policy` is no longer the running one.
pub fn request_ejection(policy: &'static str, reason: &'static str) {
    if policy == FALLBACK_POLICY {
        // Replacing the fallback by itself would fix nothing (a slow machine
        // can make rr look stalled); the watchdog only reports it.
        return;
    }
    request(Request {
        to: FALLBACK_POLICY,
        from: Some(policy),
        ejection: Some(reason),
    });
}

/// Asks for CPUs to change hands at the next rendezvous (domains.rs).
pub fn request_reallocation() {
    REALLOCATE.store(true, Ordering::Release);
    stop_everyone_soon();
}

/// Asks for extension domain `domain` to be ejected at the next rendezvous.
pub fn request_domain_ejection(domain: DomainId, reason: &'static str) {
    domains::request_ejection(domain, reason);
    request_reallocation();
}

fn request(new: Request) {
    {
        let mut pending = REQUEST.lock();
        if pending.is_some_and(|existing| existing.ejection.is_some()) {
            return;
        }
        *pending = Some(new);
    }
    stop_everyone_soon();
}

/// Has the first CPU to enter its scheduler perform what is pending.
fn stop_everyone_soon() {
    PENDING.store(true, Ordering::Release);
    let me = cpu::current_index();
    for index in (0..cpu::cpus_found()).filter(|&index| index != me) {
        kick(CpuId(index as u16));
    }
}

/// CPU 0's tick: starts scheduled swaps when due and runs the watchdog.
pub fn on_bootstrap_tick(now: u64) {
    let start = START.load(Ordering::Acquire);
    if start == 0 {
        return;
    }
    let due = {
        let mut schedule = SCHEDULE.lock();
        match schedule.first() {
            Some(&(at, name)) if now >= start.saturating_add(at) => {
                schedule.remove(0);
                Some(name)
            }
            _ => None,
        }
    };
    if let Some(name) = due {
        request(Request {
            to: name,
            from: None,
            ejection: None,
        });
    }
    if now.saturating_sub(LAST_SCAN.load(Ordering::Relaxed)) >= WATCHDOG_SCAN_NS {
        LAST_SCAN.store(now, Ordering::Relaxed);
        let bound = WATCHDOG_NS.load(Ordering::Relaxed);
        let stalled = STRANDS
            .lock()
            .iter()
            .filter_map(|slot| slot.strand.as_ref())
            .any(|strand| {
                // An extension domain's strands wait for its processors.
                domain_of(strand) == DEFAULT_DOMAIN
                    && strand.state.load(Ordering::Acquire) == RUNNABLE
                    && strand.running_on.load(Ordering::Acquire) == cpu::NO_CPU
                    && now.saturating_sub(strand.runnable_since.load(Ordering::Relaxed)) > bound
            });
        if stalled {
            if current_policy() != FALLBACK_POLICY {
                super::dump_cpus();
            }
            request_ejection(
                current_policy(),
                "left a runnable strand waiting past the watchdog bound",
            );
        }
    }
}

/// The top of every CPU's scheduler: acknowledges a stop, or performs a
/// requested swap. Interrupts are off.
pub fn rendezvous() {
    if !PENDING.load(Ordering::Acquire) && !STOPPING.load(Ordering::Acquire) {
        return;
    }
    let me = cpu::current_index();
    let requested = STOP_REQUESTED[me].load(Ordering::Acquire);
    if requested > STOP_ACKNOWLEDGED[me].load(Ordering::Relaxed) {
        STOP_ACKNOWLEDGED[me].store(requested, Ordering::Release);
        while RELEASED.load(Ordering::Acquire) < requested {
            crate::extensions::relax();
        }
        return;
    }
    if !PENDING.load(Ordering::Acquire)
        || OWNER
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    PENDING.store(false, Ordering::Release);
    let request = REQUEST.lock().take();
    let reallocate = REALLOCATE.swap(false, Ordering::AcqRel);
    if request.is_none() && !reallocate {
        OWNER.store(false, Ordering::Release);
        return;
    }
    let epoch = EPOCH.fetch_add(1, Ordering::AcqRel) + 1;
    let started = tsc::now();
    STOPPING.store(true, Ordering::Release);
    let others: Vec<usize> = (0..cpu::cpus_found())
        .filter(|&index| index != me)
        .collect();
    for &index in &others {
        STOP_REQUESTED[index].store(epoch, Ordering::Release);
        kick(CpuId(index as u16));
    }
    let deadline = started + tsc::ns_to_cycles(STOP_TIMEOUT_NS);
    let all_stopped = loop {
        if others
            .iter()
            .all(|&index| STOP_ACKNOWLEDGED[index].load(Ordering::Acquire) == epoch)
        {
            break true;
        }
        if tsc::now() > deadline {
            break false;
        }
        crate::extensions::relax();
    };
    if !all_stopped {
        let late: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&index| STOP_ACKNOWLEDGED[index].load(Ordering::Acquire) != epoch)
            .collect();
        crate::kprintln!("kernel: cpu {me}: CPUs {late:?} did not stop within 2 s");
        super::dump_cpus();
    }
    let at_ns =
        crate::kernel::nanoseconds_since_boot().saturating_sub(START.load(Ordering::Relaxed));
    let mut records = Vec::new();
    if let Some(request) = request {
        let mut record = SwapRecord {
            from: current_policy(),
            to: request.to,
            at_ns,
            pause_ns: 0,
            strands: 0,
            ejection: request.ejection,
            kernel_view: false,
            failed: None,
        };
        let stale = request.from.is_some_and(|from| from != record.from);
        if !all_stopped {
            record.failed = Some("not every CPU stopped in time");
        } else if !stale {
            perform(request, &mut record);
        }
        if !stale {
            records.push(record);
        }
    }
    if reallocate && all_stopped {
        for (name, reason, strands) in domains::apply_stopped() {
            records.push(SwapRecord {
                from: name,
                to: current_policy(),
                at_ns,
                pause_ns: 0,
                strands,
                ejection: Some(reason),
                kernel_view: true,
                failed: None,
            });
        }
    } else if reallocate {
        // Tried again at the next rendezvous.
        REALLOCATE.store(true, Ordering::Release);
        PENDING.store(true, Ordering::Release);
    }
    let pause = tsc::cycles_to_ns(tsc::now() - started);
    let histogram = if records.iter().any(|record| record.ejection.is_none()) {
        PAUSE.get()
    } else {
        REALLOC_PAUSE.get()
    };
    if let Some(histogram) = histogram {
        histogram.record(pause);
    }
    RELEASED.store(epoch, Ordering::Release);
    STOPPING.store(false, Ordering::Release);
    OWNER.store(false, Ordering::Release);
    for mut record in records {
        record.pause_ns = pause;
        LOG.lock().push(record);
    }
    // Idle CPUs look at the new policy's queues.
    for &index in &others {
        kick(CpuId(index as u16));
    }
}

/// Replaces the policy (every other CPU is stopped).
fn perform(request: Request, record: &mut SwapRecord) {
    let Some(info) = find_policy(request.to) else {
        record.failed = Some("no such policy");
        return;
    };
    let context = policy_context();
    let old = POLICY.lock().clone();
    let handover = match (request.ejection, old) {
        (None, Some(policy)) => {
            let (strands, kernel_view) = exported_or_kernel_view(
                &Owner {
                    domain: DEFAULT_DOMAIN,
                    policy,
                },
                &context,
            );
            record.kernel_view = kernel_view;
            strands
        }
        _ => {
            record.kernel_view = true;
            kernel_view(DEFAULT_DOMAIN)
        }
    };
    record.strands = handover.len();
    let new: alloc::sync::Arc<dyn spindle_sched_ext::Policy> =
        alloc::sync::Arc::from((info.create)(context.cpu_count));
    let imported = calls::call_policy(DEFAULT_DOMAIN, &new, Callback::Import, |policy| {
        policy.import(&context, handover)
    });
    match imported {
        Ok(Ok(())) => {
            let old = POLICY.lock().replace(new);
            *CURRENT.lock() = info.name;
            calls::policy_installed();
            drop(old);
            if record.ejection.is_some() {
                COUNTERS.ejections.fetch_add(1, Ordering::Relaxed);
            } else {
                COUNTERS.swaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Err(refusal)) => record.failed = Some(refusal.0),
        Err(reason) => {
            crate::kprintln!("kernel: policy {} {reason} during a hand-over", info.name);
            record.failed = Some(reason);
        }
    }
}

/// The hand-over of `old`'s strands: its export, checked against the
/// kernel's own table (every live strand of its domain exactly once, in the
/// state the kernel knows), else the kernel's view; each strand with its
/// effective affinity. Also says whether the kernel's view was used.
fn exported_or_kernel_view(old: &Owner, context: &Context) -> (Vec<ExportedStrand>, bool) {
    let kernel = kernel_view(old.domain);
    // A faulting export is no hand-over: the kernel's view is used, and the
    // old policy is quarantined with the swap's completion.
    let exported = calls::call(old, Callback::Export, |policy| policy.export(context));
    let (mut strands, kernel_view) = match exported {
        Some(exported) if matches_kernel_view(&exported, &kernel) => (exported, false),
        _ => (kernel, true),
    };
    for strand in &mut strands {
        if let Some(known) = super::lookup(strand.spec.id) {
            strand.spec.affinity = effective_affinity(&known);
        }
    }
    (strands, kernel_view)
}

/// The hand-over of `old`'s strands to a fresh instance of its policy
/// (processor reallocation, domains.rs).
pub(super) fn hand_over_strands(old: &Owner, context: &Context) -> Vec<ExportedStrand> {
    exported_or_kernel_view(old, context).0
}

/// Every live strand of `domain` as the kernel knows it, in table order.
fn kernel_view(domain: DomainId) -> Vec<ExportedStrand> {
    STRANDS
        .lock()
        .iter()
        .filter_map(|slot| slot.strand.as_ref())
        .filter(|strand| domain_of(strand) == domain)
        .filter_map(|strand| exported(strand))
        .collect()
}

fn exported(strand: &Strand) -> Option<ExportedStrand> {
    let state = match strand.state.load(Ordering::Acquire) {
        RUNNABLE => StrandState::Runnable,
        BLOCKED => StrandState::Blocked,
        RUNNING => StrandState::Running(CpuId(strand.running_on.load(Ordering::Acquire) as u16)),
        _ => return None,
    };
    Some(ExportedStrand {
        spec: StrandSpec::new(strand.id, effective_affinity(strand), strand.params),
        state,
        virtual_time: 0,
        absolute_deadline: None,
        run_time: strand.run_time.load(Ordering::Relaxed),
    })
}

/// Whether a policy's export names every strand of the kernel's view
/// exactly once, in the same state.
fn matches_kernel_view(exported: &[ExportedStrand], kernel: &[ExportedStrand]) -> bool {
    if exported.len() != kernel.len() {
        return false;
    }
    let mut theirs: Vec<_> = exported
        .iter()
        .map(|strand| (strand.spec.id, strand.state))
        .collect();
    let mut ours: Vec<_> = kernel
        .iter()
        .map(|strand| (strand.spec.id, strand.state))
        .collect();
    theirs.sort_by_key(|&(id, _)| id);
    ours.sort_by_key(|&(id, _)| id);
    theirs == ours
}
