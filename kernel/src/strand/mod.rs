//! Strands, SPIN's schedulable contexts, and the trusted global scheduler that runs them on every CPU under a policy from `sched-ext`.
//!
//! A strand owns a guarded stack and, while it is not running, the address
//! of its saved `InterruptFrame` on that stack (arch/context.rs). The
//! scheduler runs at the end of the outermost interrupt on each CPU
//! ([`on_interrupt_exit`]): after a timer tick whose policy answer was
//! "preempt", after `int VECTOR_SWITCH` (yield, exit), and on an idle CPU
//! after every interrupt. It raises the policy's Checkpoint on the strand
//! leaving the CPU, asks the policy for the next one, **re-checks** the
//! answer (the strand exists, is runnable, may run here, and is on no other
//! CPU), raises Resume and returns the strand's frame. Policy code runs with
//! interrupts off on the calling CPU but under no kernel lock that another
//! CPU's scheduler needs.
//!
//! The scheduler runs on the CPU's own interrupt stack (`interrupt_common`
//! switches to it for every external interrupt), never on a strand's stack:
//! so the strand leaving a CPU is released at once, and another CPU may
//! resume it while this one is still in the handler. An exited strand is
//! reaped there too, which frees its stack.
//!
//! This is the first step of issue 5: create, yield, exit, preemption by
//! the APIC timer, remote wake-ups by IPI, any policy of the catalogue.
//! Block/unblock by the strands themselves, sleep, directed yield,
//! affinity changes, swaps and ejection are still to come.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use spindle_sched_ext::{
    CheckpointReason, Context, CpuId, CpuSet, DomainId, Policy, Runner, SchedParams, StrandId,
    StrandSpec, TickAction, DEFAULT_DOMAIN,
};

use crate::arch::interrupts::{self, InterruptFrame};
use crate::arch::paging::{GuardedStack, PagingError};
use crate::arch::{apic, context, cpu};
use crate::metrics::{self, PerCpuHistogram};
use crate::sync::{irq_mutex, IrqMutex};

mod calls;
pub mod domains;
mod swap;
use calls::{Callback, Owner};
pub use swap::{current_policy, find_policy, swap_log};

/// Bytes of stack each strand gets (plus a guard page below).
pub const STACK_SIZE: usize = 16 * 1024;
/// `context::request_switch` requests (in `rax`).
const REQUEST_NONE: u64 = 0;
const REQUEST_YIELD: u64 = 1;
const REQUEST_EXIT: u64 = 2;
/// A timer tick's policy answer asked for preemption.
const REQUEST_PREEMPT: u64 = 3;
/// The strand blocks (`rdi`: a wake-up deadline in ns since boot, or 0).
const REQUEST_BLOCK: u64 = 4;
/// Directed yield (`rdi`: the packed identifier of the strand to run).
const REQUEST_YIELD_TO: u64 = 5;
/// The strand's affinity changed: it leaves the CPU to be admitted again.
const REQUEST_READMIT: u64 = 6;
/// How many wrong answers of `pick_next` one scheduling pass tolerates.
const PICK_ATTEMPTS: usize = 4;

/// Strand states.
const RUNNABLE: u8 = 1;
const RUNNING: u8 = 2;
const BLOCKED: u8 = 3;
const EXITED: u8 = 4;

/// One strand.
struct Strand {
    id: StrandId,
    /// The domain whose policy schedules it (changes only when an extension
    /// domain is ejected, with every CPU stopped).
    domain: AtomicU16,
    state: AtomicU8,
    /// The CPU running it, or `cpu::NO_CPU`.
    running_on: AtomicU32,
    /// The CPU it last ran on (for migration counts and `select_cpu`).
    last_cpu: AtomicU32,
    /// Address of the saved frame while not running.
    frame: AtomicU64,
    /// The thread context it is inside while not running (see
    /// arch/thread_context.rs; 0: none).
    context: AtomicU64,
    /// The CPU the strand was last preempted on, until it runs again
    /// (`NOT_PREEMPTED`: it left its last CPU on its own).
    preempted_on: AtomicU16,
    /// The CPUs it may run on (changed only while no policy queue holds it:
    /// see [`set_affinity`]).
    affinity: IrqMutex<CpuSet>,
    /// An affinity change waiting for the strand to leave its CPU or wake.
    pending_affinity: IrqMutex<Option<CpuSet>>,
    /// Strands waiting in [`join`] for this one to exit.
    joiners: IrqMutex<Vec<StrandId>>,
    /// The parameters it was created with (for hand-overs).
    params: SchedParams,
    /// CPU time so far: the sum of the stints its checkpoints reported.
    run_time: AtomicU64,
    /// When it last became runnable (for the watchdog).
    runnable_since: AtomicU64,
    /// A wake-up that arrived while it was not blocked (one is kept).
    wake_token: AtomicBool,
    /// Numbers its sleeps, so a stale timer entry does not wake it.
    sleep_sequence: AtomicU64,
    /// The deadline of the sleep it is in (0: none), for timer lateness.
    sleep_deadline: AtomicU64,
    /// When it was last made runnable by a wake-up (0: not measured).
    woken_at: AtomicU64,
    /// Whether that wake-up came from another CPU than the one chosen.
    woken_remotely: AtomicBool,
    /// The code to run, taken by the strand's first instruction.
    body: IrqMutex<Option<Box<dyn FnOnce() + Send>>>,
    _stack: GuardedStack,
}

impl Strand {
    /// The CPUs it may run on now.
    fn affinity(&self) -> CpuSet {
        *self.affinity.lock()
    }
}

/// A slot of the strand table; the generation makes stale identifiers miss.
struct Slot {
    generation: u32,
    strand: Option<Arc<Strand>>,
}

/// What one CPU's scheduler keeps (touched only by that CPU, interrupts off).
struct CpuScheduler {
    current: Option<Arc<Strand>>,
    /// The frame of the CPU's own (idle or boot) context while a strand runs.
    idle_frame: u64,
    /// The thread context the CPU's own context is inside (see
    /// arch/thread_context.rs), kept while a strand runs.
    idle_context: u64,
    /// When the current strand's stint began.
    stint_start: u64,
    /// A pending request from the timer tick.
    request: u64,
}

static STRANDS: IrqMutex<Vec<Slot>> = irq_mutex(Vec::new());
static POLICY: IrqMutex<Option<Arc<dyn Policy>>> = irq_mutex(None);
static STARTED: AtomicBool = AtomicBool::new(false);
static CPU_SCHEDULERS: [IrqMutex<CpuScheduler>; cpu::MAX_CPUS] = [const {
    irq_mutex(CpuScheduler {
        current: None,
        idle_frame: 0,
        idle_context: 0,
        stint_start: 0,
        request: REQUEST_NONE,
    })
}; cpu::MAX_CPUS];

/// What the scheduler counted.
pub struct Counters {
    /// Strands created.
    pub created: AtomicU64,
    /// Strands exited (and reaped).
    pub exited: AtomicU64,
    /// Strand-to-strand or idle-to-strand switches.
    pub context_switches: AtomicU64,
    /// Resumes on another CPU than the strand's last.
    pub migrations: AtomicU64,
    /// Policy answers the scheduler refused (wrong CPU, unknown or
    /// unrunnable strand).
    pub rejected_decisions: AtomicU64,
    /// Live swaps performed (scheduled ones).
    pub swaps: AtomicU64,
    /// Policies ejected.
    pub ejections: AtomicU64,
    /// Directed yields the policy granted (the named strand ran next).
    pub directed_yields: AtomicU64,
    /// Directed yields refused (the caller just yielded).
    pub directed_yields_refused: AtomicU64,
    /// Affinity changes that landed.
    pub affinity_changes: AtomicU64,
    /// Affinity changes the policy refused.
    pub affinity_refusals: AtomicU64,
    /// Preemptions that handed a thread back to its package.
    pub threads_handed_back: AtomicU64,
    /// Threads handed back in place because [`interrupt`] asked for it.
    pub interrupts: AtomicU64,
    /// Yields made inside an event handler (done nothing: a raise stays on
    /// its CPU).
    pub yields_inside_raises: AtomicU64,
}

/// The scheduler's counters.
pub static COUNTERS: Counters = Counters {
    created: AtomicU64::new(0),
    exited: AtomicU64::new(0),
    context_switches: AtomicU64::new(0),
    migrations: AtomicU64::new(0),
    rejected_decisions: AtomicU64::new(0),
    swaps: AtomicU64::new(0),
    ejections: AtomicU64::new(0),
    directed_yields: AtomicU64::new(0),
    directed_yields_refused: AtomicU64::new(0),
    affinity_changes: AtomicU64::new(0),
    affinity_refusals: AtomicU64::new(0),
    threads_handed_back: AtomicU64::new(0),
    interrupts: AtomicU64::new(0),
    yields_inside_raises: AtomicU64::new(0),
};

/// Why a strand could not be created.
#[derive(Debug)]
pub enum SpawnError {
    /// `init` has not run.
    NotStarted,
    /// No memory for the stack or its guard page.
    Stack(PagingError),
    /// The policy refused the strand (e.g. EDF admission control).
    Refused(&'static str),
    /// No such extension domain (or it was ejected).
    NoSuchDomain,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NotStarted => formatter.write_str("the scheduler has not started"),
            SpawnError::Stack(error) => write!(formatter, "strand stack: {error}"),
            SpawnError::Refused(reason) => {
                write!(formatter, "the policy refused the strand: {reason}")
            }
            SpawnError::NoSuchDomain => formatter.write_str("no such domain (or it was ejected)"),
        }
    }
}

/// Starts the scheduler with `policy` (bootstrap processor, before the
/// first strand is created; the other CPUs pick strands up from their next
/// interrupt on).
pub fn init(
    name: &'static str,
    policy: Box<dyn Policy>,
    schedule: Vec<(u64, &'static str)>,
    watchdog_ns: u64,
    budget_ns: u64,
    tick_hz: u64,
) {
    interrupts::register_handler(context::VECTOR_SWITCH, |_frame| {});
    swap::init(name, schedule, watchdog_ns);
    calls::init(budget_ns, tick_hz);
    WAKE_LOCAL.call_once(|| metrics::register("sched.wake.local", "ns"));
    WAKE_REMOTE.call_once(|| metrics::register("sched.wake.remote", "ns"));
    TIMER_LATENESS.call_once(|| metrics::register("sched.timer_lateness", "ns"));
    *POLICY.lock() = Some(Arc::from(policy));
    STARTED.store(true, Ordering::Release);
}

/// The domain that schedules `strand`.
fn domain_of(strand: &Strand) -> DomainId {
    DomainId(strand.domain.load(Ordering::Acquire))
}

/// The policy that schedules `strand` (cloned out, so no lock is held while
/// it runs).
fn owner_of(strand: &Strand) -> Option<Owner> {
    domains::owner(domain_of(strand))
}

/// The CPUs a strand's policy may place it on: its affinity within the
/// CPUs its domain holds (all of its affinity while the domain holds none
/// of them: it waits for a grant).
fn effective_affinity(strand: &Strand) -> CpuSet {
    let affinity = strand.affinity();
    let held = affinity.intersection(&domains::cpus_of(domain_of(strand)));
    if held.is_empty() {
        affinity
    } else {
        held
    }
}

/// Whether some strand of the default domain may run on none of `keeps`.
fn default_strand_confined_outside(keeps: &CpuSet) -> bool {
    STRANDS
        .lock()
        .iter()
        .filter_map(|slot| slot.strand.as_ref())
        .filter(|strand| domain_of(strand) == DEFAULT_DOMAIN)
        .any(|strand| strand.affinity().intersection(keeps).is_empty())
}

/// How many live strands `domain` has.
fn strands_in(domain: DomainId) -> usize {
    STRANDS
        .lock()
        .iter()
        .filter_map(|slot| slot.strand.as_ref())
        .filter(|strand| domain_of(strand) == domain)
        .count()
}

/// Gives every strand of an ejected domain to the default domain (every
/// CPU is stopped; the default policy gets them in the hand-over that
/// follows). Returns how many moved.
fn move_strands_to_default(domain: DomainId) -> usize {
    STRANDS
        .lock()
        .iter()
        .filter_map(|slot| slot.strand.as_ref())
        .filter(|strand| domain_of(strand) == domain)
        .inspect(|strand| strand.domain.store(DEFAULT_DOMAIN.0, Ordering::Release))
        .count()
}

/// The policy's view of now, on this CPU.
fn policy_context() -> Context {
    Context::new(
        crate::kernel::nanoseconds_since_boot(),
        CpuId(cpu::current_index() as u16),
        cpu::cpus_found() as u16,
    )
}

/// Packs a strand identifier into one register (or one atomic).
pub fn pack_id(id: StrandId) -> u64 {
    spindle_services::strands::pack(id)
}

/// The identifier [`pack_id`] packed.
pub fn unpack_id(packed: u64) -> StrandId {
    spindle_services::strands::unpack(packed)
}

/// The strand called `id`, if it still exists.
fn lookup(id: StrandId) -> Option<Arc<Strand>> {
    let table = STRANDS.lock();
    let slot = table.get(id.index() as usize)?;
    if slot.generation != id.generation() {
        return None;
    }
    slot.strand.clone()
}

/// Makes a strand made by [`spawn_held`] runnable (its first Unblock).
/// Returns whether it exists.
pub fn start(id: StrandId) -> bool {
    let Some(strand) = lookup(id) else {
        return false;
    };
    with_interrupts_off(|| {
        if let Some(owner) = owner_of(&strand) {
            wake(&owner, &strand, false);
        }
    });
    true
}

/// Creates a strand that runs `body` on any CPU in `affinity`, blocked
/// until [`start`]: a workload creates all its strands first and starts
/// them together (the creating context, a CPU's idle context, would
/// otherwise not run again until every strand it started is done).
pub fn spawn_held(
    body: Box<dyn FnOnce() + Send>,
    affinity: CpuSet,
    params: SchedParams,
) -> Result<StrandId, SpawnError> {
    spawn_in(DEFAULT_DOMAIN, body, affinity, params)
}

/// [`spawn_held`] for a strand of extension domain `domain`: scheduled by
/// that domain's policy, and run only on the CPUs the domain holds.
pub fn spawn_in(
    domain: DomainId,
    body: Box<dyn FnOnce() + Send>,
    affinity: CpuSet,
    params: SchedParams,
) -> Result<StrandId, SpawnError> {
    if !STARTED.load(Ordering::Acquire) {
        return Err(SpawnError::NotStarted);
    }
    let stack = GuardedStack::new(STACK_SIZE).map_err(SpawnError::Stack)?;
    let top = stack.top();
    swap::note_first_strand();
    // Interrupts stay off from the table insertion to the policy's
    // `strand_created`: a live swap (which needs every other CPU to take an
    // interrupt) then never sees the strand half made.
    with_interrupts_off(|| {
        let owner = domains::owner(domain).ok_or(if domain == DEFAULT_DOMAIN {
            SpawnError::NotStarted
        } else {
            SpawnError::NoSuchDomain
        })?;
        let strand = {
            let mut table = STRANDS.lock();
            let index = table
                .iter()
                .position(|slot| slot.strand.is_none())
                .unwrap_or_else(|| {
                    table.push(Slot {
                        generation: 0,
                        strand: None,
                    });
                    table.len() - 1
                });
            let slot = &mut table[index];
            slot.generation = slot.generation.wrapping_add(1);
            let id = StrandId::new(index as u32, slot.generation);
            let frame = context::initial_frame(top, strand_entry, pack_id(id));
            let strand = Arc::new(Strand {
                id,
                domain: AtomicU16::new(domain.0),
                state: AtomicU8::new(BLOCKED),
                running_on: AtomicU32::new(cpu::NO_CPU),
                last_cpu: AtomicU32::new(cpu::NO_CPU),
                frame: AtomicU64::new(frame),
                context: AtomicU64::new(0),
                preempted_on: AtomicU16::new(NOT_PREEMPTED),
                affinity: irq_mutex(affinity),
                pending_affinity: irq_mutex(None),
                joiners: irq_mutex(Vec::new()),
                params,
                run_time: AtomicU64::new(0),
                runnable_since: AtomicU64::new(0),
                wake_token: AtomicBool::new(false),
                sleep_sequence: AtomicU64::new(0),
                sleep_deadline: AtomicU64::new(0),
                woken_at: AtomicU64::new(0),
                woken_remotely: AtomicBool::new(false),
                body: irq_mutex(Some(body)),
                _stack: stack,
            });
            slot.strand = Some(Arc::clone(&strand));
            strand
        };
        let spec = StrandSpec::new(strand.id, effective_affinity(&strand), params);
        let context = policy_context();
        // A policy that faults here has accepted the strand: the fallback
        // takes it over from the kernel's table.
        if let Some(Err(refusal)) = calls::call(&owner, Callback::StrandCreated, |policy| {
            policy.strand_created(&context, &spec)
        }) {
            remove_from_table(strand.id);
            return Err(SpawnError::Refused(refusal.0));
        }
        COUNTERS.created.fetch_add(1, Ordering::Relaxed);
        Ok(strand.id)
    })
}

/// Runs `work` with interrupts disabled on this CPU.
fn with_interrupts_off<R>(work: impl FnOnce() -> R) -> R {
    let were_enabled = cpu::disable_interrupts();
    let result = work();
    cpu::restore_interrupts(were_enabled);
    result
}

/// Makes a blocked strand runnable: SPIN's Unblock, on the CPU the policy
/// chooses (re-checked against the strand's affinity).
fn wake(owner: &Owner, strand: &Strand, measured: bool) {
    with_interrupts_off(|| {
        if strand
            .state
            .compare_exchange(BLOCKED, RUNNABLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let context = policy_context();
        strand.wake_token.store(false, Ordering::SeqCst);
        strand.runnable_since.store(context.now, Ordering::Relaxed);
        // Still blocked for the policy: an affinity change lands now.
        readmit(owner, &context, strand);
        let affinity = effective_affinity(strand);
        let last = strand.last_cpu.load(Ordering::Relaxed);
        let previous = (last != cpu::NO_CPU).then_some(CpuId(last as u16));
        let fallback = affinity.first().unwrap_or(context.cpu);
        let mut target = calls::call(owner, Callback::SelectCpu, |policy| {
            policy.select_cpu(&context, strand.id, previous, &affinity)
        })
        .unwrap_or(fallback);
        if !affinity.contains(target) || usize::from(target.0) >= cpu::cpus_found() {
            COUNTERS.rejected_decisions.fetch_add(1, Ordering::Relaxed);
            target = fallback;
        }
        if measured {
            strand
                .woken_remotely
                .store(target != context.cpu, Ordering::Relaxed);
            strand.woken_at.store(context.now.max(1), Ordering::Relaxed);
        }
        calls::call(owner, Callback::Unblock, |policy| {
            policy.unblock(&context, strand.id, target)
        });
        let mut wanted = wanted_cpus(owner, &context);
        wanted.insert(target);
        let target_busy =
            target == context.cpu || RUNS_STRAND[target.index()].load(Ordering::Acquire);
        if target_busy && wanted.iter().all(|cpu| cpu == target || cpu == context.cpu) {
            // The strand waits behind another while a CPU it may use idles
            // without a tick: wake one such CPU, whose `pick_next` may take
            // it (an idle CPU no longer polls its policy every tick).
            if let Some(idle) = affinity.iter().find(|&cpu| {
                cpu != target && cpu != context.cpu && crate::timer::is_tickless(cpu.index())
            }) {
                wanted.insert(idle);
            }
        }
        if wanted.remove(context.cpu) {
            KICKED[context.cpu.index()].store(true, Ordering::Release);
        }
        for cpu_to_wake in wanted.iter() {
            kick(cpu_to_wake);
        }
    });
}

/// Applies a pending affinity change to a strand that no policy queue
/// holds (it is blocked for the policy): the policy forgets the strand and
/// admits it again with its new CPUs (`strand_exited`, `strand_created`),
/// so that every policy handles the change with the events it already has.
/// If the policy refuses the new CPUs (EDF's admission control), the old
/// ones stay and the strand is admitted again with them.
fn readmit(owner: &Owner, context: &Context, strand: &Strand) {
    let Some(new) = strand.pending_affinity.lock().take() else {
        return;
    };
    let old = strand.affinity();
    calls::call(owner, Callback::StrandExited, |policy| {
        policy.strand_exited(context, strand.id)
    });
    *strand.affinity.lock() = new;
    let admit = || {
        let spec = StrandSpec::new(strand.id, effective_affinity(strand), strand.params);
        calls::call(owner, Callback::StrandCreated, |policy| {
            policy.strand_created(context, &spec)
        })
    };
    match admit() {
        Some(Err(_refusal)) => {
            COUNTERS.affinity_refusals.fetch_add(1, Ordering::Relaxed);
            *strand.affinity.lock() = old;
            if let Some(Err(_)) = admit() {
                reject(owner.domain, "refused to take back a strand it held");
            }
        }
        _ => {
            COUNTERS.affinity_changes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends CPU `target` a wake-up interrupt (its scheduler runs after it).
fn kick(target: CpuId) {
    let index = usize::from(target.0);
    if index < cpu::cpus_found() {
        KICKED[index].store(true, Ordering::Release);
        apic::send_ipi(
            cpu::per_cpu(index).apic_id.load(Ordering::Relaxed),
            apic::VECTOR_IPI_WAKE,
        );
    }
}

/// Stops the thread a thread package's strand runs on `target` and hands it
/// back to the package (SPIN's Checkpoint), at that CPU's next interrupt
/// that finds the strand inside a thread: the strand continues at once in
/// the package's code, without leaving the CPU. This is how a
/// scheduler-activations kernel stops a busy processor to deliver an
/// upcall. Callable with interrupts off and from a `ProcessorClient`
/// event.
pub fn interrupt(target: CpuId) {
    let index = usize::from(target.0);
    if index >= cpu::cpus_found() {
        return;
    }
    PREEMPT_WANTED[index].store(true, Ordering::Release);
    if index != cpu::current_index() {
        kick(target);
    }
}

/// Where every strand begins: takes its body, drops its own reference (the
/// frame of this function is abandoned at exit), runs the body, exits.
extern "C" fn strand_entry(packed: u64) -> ! {
    let body = lookup(unpack_id(packed)).and_then(|strand| strand.body.lock().take());
    if let Some(body) = body {
        body();
    }
    context::request_switch(REQUEST_EXIT, 0);
    unreachable!("an exited strand is never resumed");
}

/// Gives the CPU up; the strand stays runnable (SPIN's Checkpoint with
/// "yielded"). From a CPU's own context it just runs the scheduler.
pub fn yield_now() {
    context::request_switch(REQUEST_YIELD, 0);
}

/// Directed yield (the Aegis exokernel's `Yield`): hands this CPU to strand
/// `target` if the policy agrees (`take_for_directed_yield`) and the
/// scheduler's checks pass; otherwise it is a plain [`yield_now`]. Either
/// way the caller stays runnable.
pub fn yield_to(target: StrandId) {
    context::request_switch(REQUEST_YIELD_TO, pack_id(target));
}

/// Why [`join`] could not wait.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    /// Only a strand can wait (a CPU's own context cannot block).
    NotAStrand,
    /// A strand cannot wait for itself.
    SelfJoin,
}

/// Waits until strand `id` has exited (at once if it already has: a stale
/// identifier names an exited strand).
pub fn join(id: StrandId) -> Result<(), JoinError> {
    let me = current_id().ok_or(JoinError::NotAStrand)?;
    if me == id {
        return Err(JoinError::SelfJoin);
    }
    let Some(target) = lookup(id) else {
        return Ok(());
    };
    {
        // The exit path marks the strand exited before it takes this list,
        // so a joiner either sees the mark or is on the list it wakes.
        let mut joiners = target.joiners.lock();
        if target.state.load(Ordering::Acquire) == EXITED {
            return Ok(());
        }
        joiners.push(me);
    }
    // Another wake-up may end a block early: wait until the mark is there.
    while target.state.load(Ordering::Acquire) != EXITED {
        block();
    }
    Ok(())
}

/// Why [`set_affinity`] refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AffinityError {
    /// No such strand (it exited).
    NoSuchStrand,
    /// The set names no CPU that is online (for a strand of the default
    /// domain: none that the default domain holds).
    NoUsableCpu,
}

/// Changes the CPUs strand `id` may run on. The change lands when no policy
/// queue holds the strand: at once for the calling strand (it leaves its
/// CPU for the policy to admit it again), at its next wake-up for a blocked
/// one, and when it next leaves a CPU for a runnable one. A policy that
/// refuses the new set keeps the old one (counted in `affinity_refusals`).
pub fn set_affinity(id: StrandId, affinity: CpuSet) -> Result<(), AffinityError> {
    let usable: CpuSet = affinity
        .iter()
        .filter(|cpu| usize::from(cpu.0) < cpu::cpus_found())
        .collect();
    if usable.is_empty() {
        return Err(AffinityError::NoUsableCpu);
    }
    let strand = lookup(id).ok_or(AffinityError::NoSuchStrand)?;
    if domain_of(&strand) == DEFAULT_DOMAIN
        && usable
            .intersection(&domains::cpus_of(DEFAULT_DOMAIN))
            .is_empty()
    {
        // Every CPU named is granted to an extension domain.
        return Err(AffinityError::NoUsableCpu);
    }
    *strand.pending_affinity.lock() = Some(usable);
    if current_id() == Some(id) {
        context::request_switch(REQUEST_READMIT, 0);
    }
    Ok(())
}

/// Whether the running strand (if any) is on a CPU its domain holds: the
/// allocation self-test checks it from inside strands (interrupts off, so
/// that a migration cannot tear the answer).
pub fn on_own_domain_cpu() -> bool {
    with_interrupts_off(|| {
        let me = cpu::current_index();
        CPU_SCHEDULERS[me]
            .lock()
            .current
            .as_ref()
            .is_none_or(|strand| domains::runs(me, domain_of(strand)))
    })
}

/// The strand running on this CPU, if any.
pub fn current_id() -> Option<StrandId> {
    with_interrupts_off(|| {
        CPU_SCHEDULERS[cpu::current_index()]
            .lock()
            .current
            .as_ref()
            .map(|strand| strand.id)
    })
}

/// SPIN's Block, by the running strand on itself: waits until
/// [`unblock`] (a wake-up that came first is kept and returns at once).
pub fn block() {
    let Some(id) = current_id() else { return };
    if lookup(id).is_some_and(|strand| strand.wake_token.swap(false, Ordering::SeqCst)) {
        return;
    }
    context::request_switch(REQUEST_BLOCK, 0);
}

/// Blocks the running strand for `nanoseconds` (a pending or later
/// [`unblock`] ends it early).
pub fn sleep(nanoseconds: u64) {
    let deadline = crate::kernel::nanoseconds_since_boot() + nanoseconds.max(1);
    context::request_switch(REQUEST_BLOCK, deadline);
}

/// SPIN's Unblock: makes strand `id` runnable if it is blocked, or keeps
/// the wake-up for its next [`block`]. Returns whether the strand exists.
pub fn unblock(id: StrandId) -> bool {
    let Some(strand) = lookup(id) else {
        return false;
    };
    with_interrupts_off(|| unblock_strand(&strand));
    true
}

/// The wake-up protocol: the token first, then the state. The blocking
/// side stores the state first, then reads the token; with sequentially
/// consistent ordering one of the two sees the other, and the compare-and-
/// swap in `wake` lets exactly one of them make the strand runnable.
fn unblock_strand(strand: &Strand) {
    strand.wake_token.store(true, Ordering::SeqCst);
    if let Some(owner) = owner_of(strand) {
        wake(&owner, strand, true);
    }
}

/// Policy calls abandoned so far (panics, CPU exceptions, budget overruns).
pub fn policy_faults() -> u64 {
    calls::FAULTS.load(Ordering::Relaxed)
}

/// CPU time strand `id` has used so far (stints ended by a checkpoint).
pub fn run_time(id: StrandId) -> Option<u64> {
    lookup(id).map(|strand| strand.run_time.load(Ordering::Relaxed))
}

/// Busy time of CPU `index`: the sum of the stints of strands on it.
pub fn busy_nanoseconds(index: usize) -> u64 {
    BUSY[index].load(Ordering::Relaxed)
}

/// Prints every live strand's state (for diagnosing a run that timed out).
pub fn dump_live_strands() {
    let live: Vec<(u32, u8, u32, bool, u64, u64)> = STRANDS
        .lock()
        .iter()
        .filter_map(|slot| slot.strand.as_ref())
        .map(|strand| {
            (
                strand.id.index(),
                strand.state.load(Ordering::Relaxed),
                strand.running_on.load(Ordering::Relaxed),
                strand.wake_token.load(Ordering::Relaxed),
                strand.sleep_deadline.load(Ordering::Relaxed),
                strand.runnable_since.load(Ordering::Relaxed),
            )
        })
        .collect();
    for (index, state, running_on, token, deadline, since) in live {
        crate::kprintln!(
            "kernel: live strand {index}: state {state} running_on {running_on} token {token} sleep_deadline {deadline} runnable_since {since}"
        );
    }
}

/// Prints each CPU's scheduler state (with the live strands) when the
/// watchdog fires, so that a stall can be diagnosed from the serial log.
pub(crate) fn dump_cpus() {
    for index in 0..cpu::cpus_found() {
        let block = cpu::per_cpu(index);
        crate::kprintln!(
            "kernel: cpu {index}: runs_strand {} tickless {} kicked {} ticks {} deadline_tsc {} now_tsc {}",
            RUNS_STRAND[index].load(Ordering::Relaxed),
            crate::timer::is_tickless(index),
            KICKED[index].load(Ordering::Relaxed),
            block.ticks.load(Ordering::Relaxed),
            block.timer_deadline_tsc.load(Ordering::Relaxed),
            crate::arch::tsc::now(),
        );
    }
    dump_live_strands();
}

/// Strands waiting on a deadline: (deadline, sleep number, strand).
static SLEEPERS: IrqMutex<Vec<(u64, u64, Arc<Strand>)>> = irq_mutex(Vec::new());
/// The earliest deadline in `SLEEPERS` (`u64::MAX`: none), written under its
/// lock: every CPU's tick reads it instead of taking the lock.
static EARLIEST_SLEEPER: AtomicU64 = AtomicU64::new(u64::MAX);
/// Set by [`kick`] before the interrupt is sent. Policy calls run with
/// interrupts on, and an interrupt that lands inside one does not run the
/// scheduler: a CPU that was kicked during its own scheduling pass must not
/// go to sleep on that kick (see `resume_next`).
static KICKED: [AtomicBool; cpu::MAX_CPUS] = [const { AtomicBool::new(false) }; cpu::MAX_CPUS];
/// Set by [`interrupt`]: the CPU's next interrupt that finds its strand
/// inside a thread hands the thread back.
static PREEMPT_WANTED: [AtomicBool; cpu::MAX_CPUS] =
    [const { AtomicBool::new(false) }; cpu::MAX_CPUS];
/// `Strand::preempted_on` of a strand that was not cut off mid-run.
const NOT_PREEMPTED: u16 = u16::MAX;
/// Per CPU: strands preempted there that have not run since. A revocation
/// completes only when none is left (see `resume_next`): a strand cut off
/// there may hold a lock its domain's other strands wait on.
static PREEMPTED_HERE: [AtomicU32; cpu::MAX_CPUS] = [const { AtomicU32::new(0) }; cpu::MAX_CPUS];
/// Whether each CPU runs a strand (else it idles).
static RUNS_STRAND: [AtomicBool; cpu::MAX_CPUS] = [const { AtomicBool::new(false) }; cpu::MAX_CPUS];
/// Per-CPU busy time.
static BUSY: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];
/// `sched.wake.local`, `sched.wake.remote`, `sched.timer_lateness`.
static WAKE_LOCAL: spin::Once<&'static PerCpuHistogram> = spin::Once::new();
static WAKE_REMOTE: spin::Once<&'static PerCpuHistogram> = spin::Once::new();
static TIMER_LATENESS: spin::Once<&'static PerCpuHistogram> = spin::Once::new();

/// Wakes the sleepers whose deadline has passed (every CPU's tick).
fn wake_due_sleepers(now: u64) {
    if now < EARLIEST_SLEEPER.load(Ordering::Acquire) {
        return;
    }
    let due: Vec<(u64, Arc<Strand>)> = {
        let mut sleepers = SLEEPERS.lock();
        let mut due = Vec::new();
        sleepers.retain(|(deadline, sequence, strand)| {
            if *deadline <= now {
                due.push((*sequence, Arc::clone(strand)));
                false
            } else {
                true
            }
        });
        let earliest = sleepers
            .iter()
            .map(|&(deadline, _, _)| deadline)
            .min()
            .unwrap_or(u64::MAX);
        EARLIEST_SLEEPER.store(earliest, Ordering::Release);
        due
    };
    for (sequence, strand) in due {
        if strand.sleep_sequence.load(Ordering::Acquire) == sequence {
            if let Some(owner) = owner_of(&strand) {
                wake(&owner, &strand, false);
            }
        }
    }
}

/// The timer tick's part: asks the policy whether the current strand should
/// give up the CPU. Interrupt context.
pub fn on_tick() {
    if !STARTED.load(Ordering::Acquire) {
        return;
    }
    let me = cpu::current_index();
    let owner = runner_owner(domains::runner(me));
    let mut scheduler = CPU_SCHEDULERS[me].lock();
    let context = policy_context();
    let ran = context.now.saturating_sub(scheduler.stint_start);
    // A strand of a domain that no longer holds this CPU leaves it now.
    let misplaced = scheduler
        .current
        .as_ref()
        .is_some_and(|strand| !domains::runs(me, domain_of(strand)));
    let current = scheduler
        .current
        .as_ref()
        .filter(|_| !misplaced)
        .map(|strand| strand.id);
    // The abort protocol: a revocation's notice ran out.
    let forced = domains::must_force(me, context.now, current);
    // An idle CPU that ticks (CPU 0) has no current strand: balancing policies use it.
    let answer = owner.as_ref().and_then(|owner| {
        calls::call(owner, Callback::Tick, |policy| {
            policy.tick(&context, current, ran)
        })
    });
    let affinity_pending = scheduler
        .current
        .as_ref()
        .is_some_and(|strand| strand.pending_affinity.lock().is_some());
    if (answer == Some(TickAction::Preempt) || affinity_pending || misplaced || forced)
        && scheduler.current.is_some()
    {
        // A pending affinity change lands when the strand leaves the CPU.
        scheduler.request = REQUEST_PREEMPT;
    }
    drop(scheduler);
    if let Some(owner) = &owner {
        kick_wanted(owner, &context);
    }
    wake_due_sleepers(context.now);
    if context.cpu.0 == 0 {
        swap::on_bootstrap_tick(context.now);
    }
}

/// The policy of the domain whose strands a CPU runs (none for a CPU on its
/// way back to the default domain).
fn runner_owner(runner: Runner) -> Option<Owner> {
    match runner {
        Runner::Default => domains::owner(DEFAULT_DOMAIN),
        Runner::Domain(domain) => domains::owner(domain),
        Runner::Nobody => None,
    }
}

/// Interrupts the CPUs the policy asked to have woken (its answer clears as
/// it is read, so this follows every call that may set it).
///
/// The policy's answer is one set for all CPUs, taken by whichever asks
/// first: a CPU that finds itself in it marks itself kicked, so that it does
/// not idle on work meant for it (see `resume_next`).
fn kick_wanted(owner: &Owner, context: &Context) {
    for wanted in wanted_cpus(owner, context).iter() {
        if wanted == context.cpu {
            KICKED[context.cpu.index()].store(true, Ordering::Release);
        } else {
            kick(wanted);
        }
    }
}

/// The CPUs the policy wants interrupted (none if it faults).
fn wanted_cpus(owner: &Owner, context: &Context) -> CpuSet {
    calls::call(owner, Callback::WantsWakeup, |policy| {
        policy.wants_wakeup(context)
    })
    .unwrap_or_default()
}

fn remove_from_table(id: StrandId) {
    let removed = {
        let mut table = STRANDS.lock();
        table.get_mut(id.index() as usize).and_then(|slot| {
            if slot.generation == id.generation() {
                slot.strand.take()
            } else {
                None
            }
        })
    };
    // Dropped outside the table lock: the last reference frees the stack.
    drop(removed);
}

/// The scheduler, at the end of the outermost interrupt on this CPU:
/// returns the frame to resume (`frame` itself when nothing changes).
pub fn on_interrupt_exit(frame: &mut InterruptFrame) -> *mut InterruptFrame {
    let frame_address = frame as *mut InterruptFrame as u64;
    if !STARTED.load(Ordering::Acquire) {
        return frame;
    }
    if crate::extensions::inside_raise() {
        // A raise is a read section of the dispatcher's grace periods: it
        // must end on the CPU where it began, so no strand leaves the CPU
        // inside one. A tick's preemption (or a thread package's upcall)
        // stays pending until an interrupt that comes outside the raise; a
        // yield inside a handler does nothing; blocking or exiting inside a
        // handler is a bug the kernel cannot paper over.
        if frame.vector == u64::from(context::VECTOR_SWITCH) {
            match frame.rax {
                REQUEST_YIELD | REQUEST_YIELD_TO => {
                    COUNTERS
                        .yields_inside_raises
                        .fetch_add(1, Ordering::Relaxed);
                }
                request => panic!(
                    "a strand blocked or exited (request {request}) inside an event handler: \
                     handlers must not block"
                ),
            }
        }
        return frame;
    }
    // Kicks from here on are noticed at the end of this pass, even one that
    // lands inside a policy call (where it runs no scheduler).
    let me = cpu::current_index();
    KICKED[me].store(false, Ordering::Release);
    // A live swap or an ejection waits here for every CPU (see swap.rs).
    swap::rendezvous();
    // An idle CPU woken without its tick gets it back before any policy
    // call (the tick is also what breaks a call that never returns).
    crate::timer::resume_tick();
    let mut scheduler = CPU_SCHEDULERS[me].lock();
    let mut request = if frame.vector == u64::from(context::VECTOR_SWITCH) {
        frame.rax
    } else {
        core::mem::replace(&mut scheduler.request, REQUEST_NONE)
    };
    if request == REQUEST_NONE
        && scheduler.current.is_some()
        && PREEMPT_WANTED[me].load(Ordering::Acquire)
    {
        // An upcall for a thread package (`interrupt`): the thread running
        // in the strand is handed back and the strand continues at once in
        // the package's code. No scheduling decision is made, so the strand
        // does not leave the CPU (a revocation under way is not completed
        // by it). Where the strand runs no thread, the request waits for an
        // interrupt that finds one; the package's code looks for its
        // upcalls anyway.
        let inside = crate::arch::thread_context::save_current();
        let interrupted = frame as *mut InterruptFrame;
        // SAFETY: `interrupted` is the interrupted strand's saved frame and
        // `inside` the context it is inside; the strand is stopped in this
        // interrupt on this CPU, so it runs nowhere else meanwhile.
        let handed_back = unsafe { crate::arch::thread_context::hand_back(interrupted, inside) };
        if let Some(resumed) = handed_back {
            PREEMPT_WANTED[me].store(false, Ordering::Release);
            COUNTERS.interrupts.fetch_add(1, Ordering::Relaxed);
            COUNTERS.threads_handed_back.fetch_add(1, Ordering::Relaxed);
            return resumed;
        }
    }
    let context = policy_context();
    match scheduler.current.take() {
        Some(current) => {
            // A strand of a domain that no longer holds this CPU (it was
            // just granted away) leaves it as if preempted.
            let misplaced = !domains::runs(me, domain_of(&current));
            if request == REQUEST_NONE && misplaced {
                request = REQUEST_PREEMPT;
            }
            let owner = owner_of(&current);
            let Some(policy) = owner.filter(|_| request != REQUEST_NONE) else {
                scheduler.current = Some(current);
                return frame;
            };
            current.frame.store(frame_address, Ordering::Relaxed);
            let inside = crate::arch::thread_context::save_current();
            current.context.store(inside, Ordering::Relaxed);
            if request == REQUEST_PREEMPT {
                // SPIN's Checkpoint for a thread package's strand: the thread
                // it ran is handed back to the package (its state kept in its
                // context), and the strand resumes in the package's code.
                // SAFETY: `frame` is this strand's saved frame and `inside`
                // what it was inside when interrupted; the strand is being
                // switched out here, so it runs nowhere.
                if let Some(resumed) = unsafe {
                    crate::arch::thread_context::hand_back(frame as *mut InterruptFrame, inside)
                } {
                    current.frame.store(resumed as u64, Ordering::Relaxed);
                    COUNTERS.threads_handed_back.fetch_add(1, Ordering::Relaxed);
                }
            }
            let ran = context.now.saturating_sub(scheduler.stint_start);
            BUSY[me].fetch_add(ran, Ordering::Relaxed);
            if request == REQUEST_BLOCK {
                block_current(&policy, &context, current, ran, frame.rdi);
                return resume_next(&context, &mut scheduler, me, None, true);
            }
            let exited = request == REQUEST_EXIT;
            if !exited && (request == REQUEST_READMIT || current.pending_affinity.lock().is_some())
            {
                // Off the CPU as blocked, so that no queue holds it, then
                // woken: the wake-up admits it again with its new CPUs.
                block_current(&policy, &context, Arc::clone(&current), ran, 0);
                wake(&policy, &current, false);
                return resume_next(&context, &mut scheduler, me, None, true);
            }
            let directed = (request == REQUEST_YIELD_TO).then(|| unpack_id(frame.rdi));
            let (state, reason) = match request {
                REQUEST_EXIT => (EXITED, CheckpointReason::Exited),
                REQUEST_YIELD | REQUEST_YIELD_TO => (RUNNABLE, CheckpointReason::Yielded),
                _ => (RUNNABLE, CheckpointReason::Preempted),
            };
            current.run_time.fetch_add(ran, Ordering::Relaxed);
            current.runnable_since.store(context.now, Ordering::Relaxed);
            if request == REQUEST_PREEMPT {
                // Cut off mid-run: counted until it runs again (before any
                // other CPU can take it).
                current.preempted_on.store(me as u16, Ordering::Relaxed);
                PREEMPTED_HERE[me].fetch_add(1, Ordering::AcqRel);
            }
            current.state.store(state, Ordering::Release);
            // This CPU runs on its interrupt stack now: the strand's stack
            // is free, and another CPU may resume it as soon as the policy
            // hands it out.
            current.running_on.store(cpu::NO_CPU, Ordering::Release);
            calls::call(&policy, Callback::Checkpoint, |policy| {
                policy.checkpoint(&context, current.id, reason, ran)
            });
            if exited {
                calls::call(&policy, Callback::StrandExited, |policy| {
                    policy.strand_exited(&context, current.id)
                });
                let id = current.id;
                let joiners = core::mem::take(&mut *current.joiners.lock());
                drop(current);
                remove_from_table(id);
                COUNTERS.exited.fetch_add(1, Ordering::Relaxed);
                for joiner in joiners.into_iter().filter_map(lookup) {
                    unblock_strand(&joiner);
                }
            }
            let voluntary = request != REQUEST_PREEMPT;
            return resume_next(&context, &mut scheduler, me, directed, voluntary);
        }
        None => {
            scheduler.idle_frame = frame_address;
            scheduler.idle_context = crate::arch::thread_context::save_current();
        }
    }
    resume_next(&context, &mut scheduler, me, None, true)
}

/// Takes the running strand off this CPU as blocked: SPIN's Block, then
/// Checkpoint; queues its wake-up deadline; and wakes it again at once if a
/// wake-up arrived meanwhile.
fn block_current(policy: &Owner, context: &Context, current: Arc<Strand>, ran: u64, deadline: u64) {
    current.run_time.fetch_add(ran, Ordering::Relaxed);
    calls::call(policy, Callback::Block, |policy| {
        policy.block(context, current.id)
    });
    calls::call(policy, Callback::Checkpoint, |policy| {
        policy.checkpoint(context, current.id, CheckpointReason::Blocked, ran)
    });
    let sequence = current.sleep_sequence.fetch_add(1, Ordering::AcqRel) + 1;
    current.sleep_deadline.store(deadline, Ordering::Relaxed);
    current.state.store(BLOCKED, Ordering::SeqCst);
    current.running_on.store(cpu::NO_CPU, Ordering::Release);
    // Queued only once blocked: a tick that finds the deadline passed must
    // find the strand blocked, or its wake-up would be lost.
    if deadline != 0 {
        let mut sleepers = SLEEPERS.lock();
        sleepers.push((deadline, sequence, Arc::clone(&current)));
        EARLIEST_SLEEPER.fetch_min(deadline, Ordering::AcqRel);
    }
    if current.wake_token.load(Ordering::SeqCst) {
        wake(policy, &current, true);
    }
}

/// Picks and returns the frame to resume on this CPU, from the policy of
/// the domain that holds it (after the allocation events due here).
fn resume_next(
    context: &Context,
    scheduler: &mut CpuScheduler,
    me: usize,
    directed: Option<StrandId>,
    voluntary: bool,
) -> *mut InterruptFrame {
    let context = *context;
    // A revocation completes when the domain leaves the CPU of its own
    // accord with none of its strands cut off there mid-run (or by force).
    let given_up = voluntary && PREEMPTED_HERE[me].load(Ordering::Acquire) == 0;
    let Some(owner) = runner_owner(domains::at_scheduling_point(me, given_up)) else {
        RUNS_STRAND[me].store(false, Ordering::Release);
        idle_until_kicked(me);
        crate::arch::thread_context::load_current(scheduler.idle_context);
        return scheduler.idle_frame as *mut InterruptFrame;
    };
    let policy = &owner;
    let chosen = directed
        .and_then(|target| take_directed(policy, &context, me, target))
        .or_else(|| pick_verified(policy, &context, me));
    let resumed = match chosen {
        Some(next) => {
            let preempted_on = next.preempted_on.swap(NOT_PREEMPTED, Ordering::AcqRel);
            if let Some(count) = PREEMPTED_HERE.get(usize::from(preempted_on)) {
                count.fetch_sub(1, Ordering::AcqRel);
            }
            let next_frame = next.frame.load(Ordering::Relaxed);
            crate::arch::thread_context::load_current(next.context.load(Ordering::Relaxed));
            scheduler.stint_start = context.now;
            scheduler.current = Some(next);
            RUNS_STRAND[me].store(true, Ordering::Release);
            next_frame as *mut InterruptFrame
        }
        None => {
            calls::call(policy, Callback::CpuIdle, |policy| {
                policy.cpu_idle(&context)
            });
            RUNS_STRAND[me].store(false, Ordering::Release);
            crate::arch::thread_context::load_current(scheduler.idle_context);
            scheduler.idle_frame as *mut InterruptFrame
        }
    };
    kick_wanted(policy, &context);
    if !RUNS_STRAND[me].load(Ordering::Relaxed) {
        idle_until_kicked(me);
    }
    resumed
}

/// The end of a scheduling pass that leaves CPU `me` idle: tickless until
/// the next interrupt, unless a kick landed during the pass (inside an
/// extension call, where it ran no scheduler: work queued for this CPU, or
/// a rendezvous waiting for it), which is sent again to arrive once the CPU
/// idles.
fn idle_until_kicked(me: usize) {
    if KICKED[me].load(Ordering::Acquire) {
        kick(CpuId(me as u16));
    } else {
        crate::timer::stop_tick_while_idle();
    }
}

/// Asks the policy for the next strand and re-checks its answer: the strand
/// exists, is runnable, may run on this CPU, and no other CPU is on its
/// stack. Refused answers are counted and the strand is queued again on a
/// CPU it may run on, so that a wrong answer loses nothing.
fn pick_verified(policy: &Owner, context: &Context, me: usize) -> Option<Arc<Strand>> {
    for _ in 0..PICK_ATTEMPTS {
        let id = calls::call(policy, Callback::PickNext, |policy| {
            policy.pick_next(context)
        })??;
        if let Some(strand) = claim(policy, context, me, id) {
            return Some(strand);
        }
    }
    None
}

/// A directed yield to `target`: the strand, if the policy agrees to hand
/// it over and it passes the same checks as `pick_next`'s answers.
fn take_directed(
    policy: &Owner,
    context: &Context,
    me: usize,
    target: StrandId,
) -> Option<Arc<Strand>> {
    let agreed = calls::call(policy, Callback::DirectedYield, |policy| {
        policy.take_for_directed_yield(context, target)
    }) == Some(true);
    if !agreed {
        COUNTERS
            .directed_yields_refused
            .fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let strand = claim(policy, context, me, target)?;
    COUNTERS.directed_yields.fetch_add(1, Ordering::Relaxed);
    Some(strand)
}

/// Re-checks that strand `id`, which the policy handed out for this CPU,
/// exists, is runnable, may run here and is on no other CPU; then marks it
/// running here and raises Resume. A refused answer is counted and has the
/// policy ejected; a runnable strand refused for its affinity is queued
/// again, so that nothing is lost.
fn claim(policy: &Owner, context: &Context, me: usize, id: StrandId) -> Option<Arc<Strand>> {
    let domain = policy.domain;
    let Some(strand) = lookup(id) else {
        reject(domain, "returned a strand it does not hold");
        return None;
    };
    if domain_of(&strand) != domain {
        // The capability check: a policy acts only on its domain's strands.
        reject(domain, "returned a strand of another domain");
        return None;
    }
    let state = strand.state.load(Ordering::Acquire);
    if state != RUNNABLE || !strand.affinity().contains(context.cpu) {
        if state == RUNNABLE {
            reject(domain, "returned a strand for a CPU outside its affinity");
            requeue(policy, context, &strand);
        } else if state == RUNNING {
            reject(domain, "returned a strand that is already running");
        } else {
            reject(domain, "returned a strand that is not runnable");
        }
        return None;
    }
    if strand
        .running_on
        .compare_exchange(cpu::NO_CPU, me as u32, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        reject(domain, "returned a strand that is already running");
        return None;
    }
    strand.state.store(RUNNING, Ordering::Release);
    let woken_at = strand.woken_at.swap(0, Ordering::Relaxed);
    if woken_at != 0 {
        let histogram = if strand.woken_remotely.load(Ordering::Relaxed) {
            WAKE_REMOTE.get()
        } else {
            WAKE_LOCAL.get()
        };
        if let Some(histogram) = histogram {
            histogram.record(context.now.saturating_sub(woken_at));
        }
    }
    let deadline = strand.sleep_deadline.swap(0, Ordering::Relaxed);
    if deadline != 0 {
        if let Some(histogram) = TIMER_LATENESS.get() {
            histogram.record(context.now.saturating_sub(deadline));
        }
    }
    let last = strand.last_cpu.swap(me as u32, Ordering::Relaxed);
    if last != cpu::NO_CPU && last != me as u32 {
        COUNTERS.migrations.fetch_add(1, Ordering::Relaxed);
    }
    calls::call(policy, Callback::Resume, |policy| {
        policy.resume(context, strand.id)
    });
    COUNTERS.context_switches.fetch_add(1, Ordering::Relaxed);
    Some(strand)
}

/// Counts a refused answer and has `domain`'s policy ejected for it.
fn reject(domain: DomainId, reason: &'static str) {
    COUNTERS.rejected_decisions.fetch_add(1, Ordering::Relaxed);
    calls::eject(domain, reason);
}

/// Queues a runnable strand again after a refused answer.
fn requeue(policy: &Owner, context: &Context, strand: &Strand) {
    let affinity = effective_affinity(strand);
    let target = if affinity.contains(context.cpu) {
        context.cpu
    } else {
        affinity.first().unwrap_or(context.cpu)
    };
    calls::call(policy, Callback::Unblock, |policy| {
        policy.unblock(context, strand.id, target)
    });
}
