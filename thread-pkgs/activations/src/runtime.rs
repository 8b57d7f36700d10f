//! Scheduler activations at work: the threads of a `uthreads` core (contexts, ready queues with stealing, join, mutexes, condition variables, semaphores) run on processors the kernel grants to the package's own domain, one activation per processor, with the kernel's events turned into the paper's upcalls.
//!
//! An *activation* is a strand of the package's domain, pinned to one
//! processor. What it does first is its upcall ([`Ledger::start`]):
//!
//! * **Processor added.** The kernel granted the processor (its
//!   `processor_added` event); the package's manager started a strand
//!   there, which takes the processor and runs threads.
//! * **Activation blocked.** A thread made the blocking kernel call: its
//!   activation blocks in the kernel with it (the thread's registers stay
//!   on its own stack), and a fresh activation, started on the same
//!   processor before the old one blocked, takes the processor over and
//!   runs other threads. The processor never waits for the I/O.
//! * **Activation unblocked.** When the call returns, the blocked
//!   activation only saves its thread's state (the thread switches out to
//!   it) and queues the upcall; the package makes the thread ready on a
//!   processor it holds, which the kernel stops to deliver it
//!   ([`Processors::interrupt`]: the thread running there is handed back,
//!   SPIN's Checkpoint) unless one is idle. The old activation then ends:
//!   the package never runs more activations than it has processors.
//! * **Processor preempted.** The kernel's `revoke_requested` event stops
//!   the processor at once; its activation checkpoints the thread it ran
//!   (back to the ready queues, where the other processors steal it),
//!   gives the processor up, and queues the upcall for another processor.
//!
//! Downcalls: **add more processors** while the package holds fewer than
//! it may use and has threads, and **this processor is idle** when an
//! activation finds nothing to run; it then blocks, still holding the
//! processor, until threads wait again (the wake protocol of
//! [`Ledger::settle`]), and gives the processor back when the package is
//! done.
//!
//! Critical-section recovery is the `uthreads` core's: a thread stopped
//! inside the package's critical section is continued to its end before its
//! state is reused.
//!
//! The kernel's events arrive in interrupt context, where the ledger's lock
//! cannot be taken (the interrupted strand may hold it): they go through a
//! lock-free queue that every holder of the lock drains first.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::num::NonZeroU16;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;
use spin::{Mutex, MutexGuard, Once};
use spindle_sched_ext::{
    Context, CpuId as KernelCpu, CpuSet, DomainId, Nanoseconds, ProcessorClient, Revocation,
    StrandId,
};
use spindle_services::contexts::{Contexts, Outcome};
use spindle_services::processors::Processors;
use spindle_services::strands::Strands;
use spindle_uthreads::runtime::{Host, Runtime, RuntimeError, Thread};
use spindle_uthreads::CarrierId;

use crate::ledger::{Counts, Ledger, Start, Upcall};
use crate::{ActivationId, CpuId};

/// The name of the package's domain.
pub const DOMAIN_NAME: &str = "activations";

/// Kernel events waiting for the ledger (more than enough: each CPU has at
/// most a few in flight).
const EVENT_QUEUE: usize = 1024;

/// How the package runs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The most processors the package asks for (CPUs `1..=processors`;
    /// CPU 0 stays with the kernel).
    pub processors: u16,
    /// Revoke one of the package's busy processors this often (a kernel
    /// that gives processors to others), to exercise "processor
    /// preempted"; `None`: never.
    pub revoke_every_ns: Option<u64>,
    /// The notice each such revocation gives.
    pub revoke_notice_ns: u64,
}

impl Config {
    /// Up to `processors` processors, never revoked.
    pub const fn new(processors: u16) -> Config {
        Config {
            processors,
            revoke_every_ns: None,
            revoke_notice_ns: 50_000_000,
        }
    }
}

/// What the package counted (besides the ledger's upcalls and checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Upcalls, downcalls and invariant checks.
    pub ledger: Counts,
    /// Times two strands ran the package on one processor at once.
    pub double_running: u64,
    /// Blocking kernel calls made by threads.
    pub blocking_calls: u64,
    /// Activation strands created.
    pub activations_created: u64,
    /// Revocations the package's manager asked of the kernel.
    pub revocations_requested: u64,
    /// Kernel events the queue could not take (a bug if not zero).
    pub events_dropped: u64,
    /// Time the package held processors, summed over processors: from each
    /// processor's first activation to its return or revocation.
    pub granted_ns: u64,
}

impl Report {
    /// Every broken invariant: more activations than processors, two on
    /// one processor, a processor idle while threads waited, lost events.
    pub fn violations(&self) -> u64 {
        self.ledger.violations() + self.double_running + self.events_dropped
    }
}

/// A kernel event, as the client queues it.
#[derive(Clone, Copy, Debug)]
enum Event {
    Added(CpuId),
    RevokeRequested(CpuId),
    Revoked(CpuId),
}

/// The scheduler-activations package: threads on granted processors.
pub struct Activations {
    runtime: Arc<Runtime>,
    strands: &'static dyn Strands,
    processors: &'static dyn Processors,
    config: Config,
    /// The CPUs the kernel may grant (every CPU but CPU 0); the package
    /// holds at most `config.processors` of them.
    candidates: Vec<CpuId>,
    domain: Once<DomainId>,
    ledger: Mutex<Ledger>,
    /// Activations idle or about to be: a thread operation skips the wake
    /// protocol (and its locks) when there are none. An activation counts
    /// itself before it looks for waiting threads and uncounts itself once
    /// awake, so a thread readied meanwhile is either seen by it or sees it.
    idle: AtomicUsize,
    /// Upcalls may be queued in the ledger (set whenever one is).
    upcalls_pending: AtomicBool,
    events: ArrayQueue<Event>,
    events_dropped: AtomicU64,
    /// The package is done: activations give their processors back.
    shutdown: AtomicBool,
    /// Activation strands created and not yet ended.
    alive: AtomicU64,
    /// Per CPU: strands running the package there now (at most one).
    running: Vec<AtomicU32>,
    double_running: AtomicU64,
    blocking_calls: AtomicU64,
    activations_created: AtomicU64,
    revocations_requested: AtomicU64,
    /// Per CPU: when its current grant's first activation started (0: not
    /// held).
    held_since: Vec<AtomicU64>,
    /// Time processors were held, summed (see [`Report::granted_ns`]).
    granted_ns: AtomicU64,
    /// When the manager next revokes a processor.
    next_revocation: AtomicU64,
    /// Orphaned activations (made able to run anywhere), woken at the end.
    orphans: Mutex<Vec<StrandId>>,
}

/// The kernel's view of the package: its `ProcessorClient`.
struct Client(Weak<Activations>);

impl ProcessorClient for Client {
    fn processor_added(&self, _ctx: &Context, cpu: KernelCpu) {
        if let Some(package) = self.0.upgrade() {
            package.event(Event::Added(CpuId(cpu.0)));
        }
    }

    fn revoke_requested(&self, _ctx: &Context, cpu: KernelCpu, _deadline: Nanoseconds) {
        if let Some(package) = self.0.upgrade() {
            package.event(Event::RevokeRequested(CpuId(cpu.0)));
            // Stop the processor now: its activation gives it up at once.
            package.processors.interrupt(cpu);
        }
    }

    fn processor_revoked(&self, _ctx: &Context, cpu: KernelCpu, _how: Revocation) {
        if let Some(package) = self.0.upgrade() {
            package.event(Event::Revoked(CpuId(cpu.0)));
        }
    }
}

/// The `uthreads` core's view of the package: its [`Host`].
struct PackageHost(Weak<Activations>);

impl Host for PackageHost {
    fn block_in_kernel(&self, thread: &Thread<'_>, nanoseconds: u64) {
        match self.0.upgrade() {
            Some(package) => package.block_in_kernel(thread, nanoseconds),
            None => thread.strands().sleep(nanoseconds),
        }
    }

    fn threads_ready(&self) {
        if let Some(package) = self.0.upgrade() {
            package.settle();
        }
    }
}

impl Activations {
    /// A package that will run threads on up to `config.processors`
    /// processors. Needs a CPU besides CPU 0.
    pub fn new(
        strands: &'static dyn Strands,
        contexts: &'static dyn Contexts,
        processors: &'static dyn Processors,
        config: Config,
    ) -> Result<Arc<Activations>, RuntimeError> {
        let cpus = strands.cpu_count();
        if cpus < 2 || config.processors == 0 {
            return Err(RuntimeError::Kernel(String::from(
                "scheduler activations need a processor besides CPU 0 (run with -smp 2 or more)",
            )));
        }
        let carriers = NonZeroU16::new(cpus).unwrap_or(NonZeroU16::MIN);
        let package = Arc::new(Activations {
            runtime: Runtime::new(strands, contexts, carriers),
            strands,
            processors,
            config,
            candidates: (1..cpus).map(CpuId).collect(),
            domain: Once::new(),
            ledger: Mutex::new(Ledger::new(cpus)),
            idle: AtomicUsize::new(0),
            upcalls_pending: AtomicBool::new(false),
            events: ArrayQueue::new(EVENT_QUEUE),
            events_dropped: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            alive: AtomicU64::new(0),
            running: (0..cpus).map(|_| AtomicU32::new(0)).collect(),
            double_running: AtomicU64::new(0),
            blocking_calls: AtomicU64::new(0),
            activations_created: AtomicU64::new(0),
            revocations_requested: AtomicU64::new(0),
            held_since: (0..cpus).map(|_| AtomicU64::new(0)).collect(),
            granted_ns: AtomicU64::new(0),
            next_revocation: AtomicU64::new(u64::MAX),
            orphans: Mutex::new(Vec::new()),
        });
        let host: Arc<dyn Host> = Arc::new(PackageHost(Arc::downgrade(&package)));
        package.runtime.set_host(host);
        Ok(package)
    }

    /// The `uthreads` core (its counts and invariant check).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// What the package counted so far.
    pub fn report(&self) -> Report {
        Report {
            ledger: self.ledger().counts(),
            double_running: self.double_running.load(Ordering::Relaxed),
            blocking_calls: self.blocking_calls.load(Ordering::Relaxed),
            activations_created: self.activations_created.load(Ordering::Relaxed),
            revocations_requested: self.revocations_requested.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            granted_ns: self.granted_ns.load(Ordering::Relaxed),
        }
    }

    /// The CPUs the kernel may grant the package.
    pub fn candidates(&self) -> impl Iterator<Item = KernelCpu> + '_ {
        self.candidates.iter().map(|cpu| KernelCpu(cpu.0))
    }

    /// Runs `main` as the first thread and returns once every thread has
    /// finished, every activation has ended and every processor is back.
    /// Called from a CPU's own context (CPU 0's): it is the package's
    /// manager meanwhile (starts activations on granted processors, asks
    /// for processors, revokes when configured). Gives up after
    /// `timeout_ns`.
    pub fn run(
        self: &Arc<Self>,
        main: impl FnOnce(&Thread<'_>) + Send + 'static,
        timeout_ns: u64,
    ) -> Result<(), RuntimeError> {
        let client: Arc<dyn ProcessorClient> = Arc::new(Client(Arc::downgrade(self)));
        let domain = self
            .processors
            .register(DOMAIN_NAME, client)
            .map_err(RuntimeError::Kernel)?;
        self.domain.call_once(|| domain);
        if let Some(period) = self.config.revoke_every_ns {
            self.next_revocation
                .store(self.strands.now() + period, Ordering::Relaxed);
        }
        self.runtime.start_main(main)?;
        self.ask_for_processors(domain);
        let finished = self.strands.wait_until(&|| self.manage(domain), timeout_ns);
        if finished {
            Ok(())
        } else {
            Err(RuntimeError::Kernel(format!(
                "activations did not finish in time: {} threads live, {} activations alive, \
                 domain idle {}, CPUs allocated {:?}, {:?}, {:?}",
                self.runtime.live(),
                self.alive.load(Ordering::Acquire),
                self.processors.is_idle(domain),
                self.processors.allocated(domain),
                self.runtime.counts(),
                self.report()
            )))
        }
    }

    /// One pass of the manager (CPU 0's own context, after each of its
    /// interrupts); true once everything has ended.
    fn manage(self: &Arc<Self>, domain: DomainId) -> bool {
        let done_threads = self.runtime.live() == 0;
        if done_threads {
            self.shutdown.store(true, Ordering::Release);
        }
        // Activations for processors that were just granted.
        let needed: Vec<CpuId> = {
            let ledger = self.ledger();
            self.candidates
                .iter()
                .copied()
                .filter(|&cpu| ledger.needs_activation(cpu))
                .collect()
        };
        for cpu in needed {
            self.start_activation(domain, cpu);
        }
        // Orphans can run anywhere from now on; they end when woken.
        let orphans = self.ledger().take_orphans();
        let everywhere: CpuSet = self.candidates().collect();
        for orphan in orphans {
            if self.processors.set_affinity(orphan, everywhere).is_ok() {
                self.orphans.lock().push(orphan);
            }
        }
        if self.shutdown.load(Ordering::Acquire) {
            self.wind_down(domain);
        } else {
            self.ask_for_processors(domain);
            self.revoke_if_due(domain);
        }
        done_threads && self.alive.load(Ordering::Acquire) == 0 && self.processors.is_idle(domain)
    }

    /// The end: idle activations and orphans are woken (they end), and a
    /// standby stranded on a processor taken back gets it again so that it
    /// can end (it gives it back at once).
    fn wind_down(&self, domain: DomainId) {
        let (idle, stranded) = {
            let mut ledger = self.ledger();
            (ledger.idle_strands(), ledger.stranded_standbys())
        };
        for strand in idle {
            self.strands.unblock(strand);
        }
        let orphans = core::mem::take(&mut *self.orphans.lock());
        for orphan in orphans {
            self.strands.unblock(orphan);
        }
        if self.alive.load(Ordering::Acquire) > 0 && self.processors.allocated(domain).is_empty() {
            for (cpu, _) in stranded {
                let _ = self.processors.grant(domain, KernelCpu(cpu.0));
            }
            if self.processors.allocated(domain).is_empty() {
                // Orphans need some processor to end on.
                self.processors.request_processors(domain, 1);
            }
        }
    }

    /// Downcall "add more processors" while threads live and the package
    /// holds (or is getting) fewer processors than it may use.
    fn ask_for_processors(&self, domain: DomainId) {
        if self.runtime.live() == 0 {
            return;
        }
        let allocated = self.processors.allocated(domain).len();
        let missing = usize::from(self.config.processors).saturating_sub(allocated);
        if missing > 0 && self.processors.request_processors(domain, missing) > 0 {
            self.ledger().add_more_processors();
        }
    }

    /// The configured revocations: a busy processor, round robin.
    fn revoke_if_due(&self, domain: DomainId) {
        let Some(period) = self.config.revoke_every_ns else {
            return;
        };
        let now = self.strands.now();
        if now < self.next_revocation.load(Ordering::Relaxed) {
            return;
        }
        self.next_revocation.store(now + period, Ordering::Relaxed);
        let busy = self.ledger().busy_processors();
        let turn = self.revocations_requested.load(Ordering::Relaxed) as usize;
        if let Some(cpu) = busy.get(turn % busy.len().max(1)) {
            let cpu = KernelCpu(cpu.0);
            if self
                .processors
                .revoke(domain, cpu, self.config.revoke_notice_ns)
                .is_ok()
            {
                self.revocations_requested.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts a strand that will be `cpu`'s next activation.
    fn start_activation(self: &Arc<Self>, domain: DomainId, cpu: CpuId) {
        if let Some(strand) = self.spawn_activation(domain, cpu) {
            self.ledger().standby_started(cpu, strand);
            self.strands.start(strand);
        }
    }

    /// Makes (held, not started) a strand that will be an activation on
    /// `cpu`; `None` if the kernel could not (the manager tries again).
    fn spawn_activation(self: &Arc<Self>, domain: DomainId, cpu: CpuId) -> Option<StrandId> {
        let package = Arc::clone(self);
        let body = Box::new(move || {
            package.activation(cpu);
            package.alive.fetch_sub(1, Ordering::AcqRel);
        });
        self.alive.fetch_add(1, Ordering::AcqRel);
        let affinity = CpuSet::single(KernelCpu(cpu.0));
        match self.processors.spawn_held_in(domain, body, affinity) {
            Ok(strand) => {
                self.activations_created.fetch_add(1, Ordering::Relaxed);
                Some(strand)
            }
            Err(_) => {
                self.alive.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// An activation's life on `cpu`: its upcall, then threads until it
    /// blocks in the kernel, gives the processor up, or the package is done.
    fn activation(self: &Arc<Self>, cpu: CpuId) {
        let Some(me) = self.strands.current() else {
            return;
        };
        let activation = loop {
            if self.shutdown.load(Ordering::Acquire) {
                // A standby at the end: it gives back a processor that has
                // no activation to do it.
                let unattended = {
                    let mut ledger = self.ledger();
                    ledger.standby_ended(cpu, me);
                    ledger.needs_activation(cpu)
                };
                if unattended {
                    self.end_on(cpu, None);
                }
                return;
            }
            let start = self.ledger().start(cpu, me);
            match start {
                Start::Added(activation) => {
                    self.hold(cpu, true);
                    break activation;
                }
                Start::Blocked { fresh, .. } => break fresh,
                Start::Occupied => {
                    self.ledger().standby_ended(cpu, me);
                    return;
                }
                // Being taken back: yielding gives the processor up; this
                // strand runs again when the processor is granted again.
                Start::NotGranted => self.strands.yield_now(),
            }
        };
        self.enter(cpu);
        // The upcall this activation was started for.
        self.check_after_upcall();
        let carrier = CarrierId(cpu.0);
        let mut last_preempted = None;
        loop {
            self.deliver_upcalls();
            if self.shutdown.load(Ordering::Acquire) {
                self.leave(cpu);
                self.end_on(cpu, Some(activation));
                return;
            }
            {
                let mut ledger = self.ledger();
                ledger.resume_stranded(cpu, activation);
                if !ledger.is_current(cpu, activation) {
                    drop(ledger);
                    self.leave(cpu);
                    return;
                }
                if ledger.revoking(cpu) {
                    let _ = ledger.give_up(cpu, activation, last_preempted.take());
                    self.upcalls_pending.store(true, Ordering::SeqCst);
                    drop(ledger);
                    self.hold(cpu, false);
                    self.leave(cpu);
                    self.deliver(Some(cpu));
                    // Blocking (ending) gives the processor up.
                    return;
                }
            }
            match self.runtime.pick(carrier) {
                Ok(Some(thread)) => {
                    let outcome = self.runtime.run_thread(carrier, thread);
                    // Blocked in the kernel meanwhile: the call has returned
                    // and the thread's state is saved in its context.
                    if self.ledger().unblocked(activation).is_some() {
                        self.upcalls_pending.store(true, Ordering::SeqCst);
                        self.deliver(Some(cpu));
                        return;
                    }
                    last_preempted = (outcome == Outcome::Preempted).then_some(thread);
                }
                Ok(None) => {
                    if self.runtime.live() == 0 {
                        self.shutdown.store(true, Ordering::Release);
                        continue;
                    }
                    self.idle.fetch_add(1, Ordering::SeqCst);
                    let idle = self
                        .ledger()
                        .go_idle(cpu, activation, self.runtime.waiting());
                    if idle == Ok(true) {
                        self.leave(cpu);
                        self.strands.block();
                        self.idle.fetch_sub(1, Ordering::SeqCst);
                        if !self.ledger().is_current(cpu, activation) {
                            // Its processor was taken meanwhile: an orphan.
                            return;
                        }
                        self.enter(cpu);
                    } else {
                        self.idle.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(_) => {
                    self.leave(cpu);
                    return;
                }
            }
        }
    }

    /// The package is done: the activation (if it was one) gives its
    /// processor back ("this processor is idle") and ends.
    fn end_on(&self, cpu: CpuId, activation: Option<ActivationId>) {
        if let Some(activation) = activation {
            let _ = self.ledger().finish(cpu, activation);
            self.hold(cpu, false);
        }
        if let Some(&domain) = self.domain.get() {
            let _ = self.processors.release(domain, KernelCpu(cpu.0));
        }
    }

    /// `thread`'s blocking kernel call, on the activation running it.
    fn block_in_kernel(self: &Arc<Self>, thread: &Thread<'_>, nanoseconds: u64) {
        let me = self.strands.current();
        let found = me.and_then(|me| self.ledger().activation_of(me));
        let (Some((cpu, activation)), Some(&domain)) = (found, self.domain.get()) else {
            self.strands.sleep(nanoseconds);
            return;
        };
        self.blocking_calls.fetch_add(1, Ordering::Relaxed);
        let id = thread.id();
        let left = thread.leave_carrier(|| {
            // The fresh activation, made first and recorded in the same step
            // as the block (so that the manager does not start another).
            let fresh = self.spawn_activation(domain, cpu);
            let blocked = {
                let mut ledger = self.ledger();
                let blocked = ledger.block(cpu, activation, id).is_ok();
                if let (true, Some(fresh)) = (blocked, fresh) {
                    ledger.standby_started(cpu, fresh);
                }
                blocked
            };
            if blocked {
                // This strand stops running the package before the fresh
                // activation can start.
                self.leave(cpu);
            }
            if let Some(fresh) = fresh {
                // Not needed if the block was refused: it finds the
                // processor occupied and ends.
                self.strands.start(fresh);
            }
            self.strands.sleep(nanoseconds);
            if !blocked {
                // Not recorded as blocked: nobody will deliver an upcall
                // for it, so the thread is made ready here.
                let _ = self.runtime.make_ready(id);
            }
        });
        if left.is_err() {
            self.strands.sleep(nanoseconds);
        }
    }

    /// Delivers the queued upcalls here: "activation unblocked" makes its
    /// thread ready; "processor preempted" needs nothing more (the thread
    /// was checkpointed when the processor stopped). Then the wake protocol.
    fn deliver_upcalls(&self) {
        if !self.upcalls_pending.swap(false, Ordering::SeqCst) {
            return;
        }
        let upcalls = self.ledger().take_upcalls();
        for upcall in upcalls {
            if let Upcall::Unblocked { thread, .. } = upcall {
                let _ = self.runtime.make_ready(thread);
            }
        }
        self.check_after_upcall();
    }

    /// The wake protocol and the invariant check, whether or not a
    /// processor is idle: after every upcall.
    fn check_after_upcall(&self) {
        let waiting = self.runtime.waiting();
        let woken = self.ledger().settle(waiting);
        for strand in woken {
            self.strands.unblock(strand);
        }
    }

    /// Has the queued upcalls delivered: wakes an idle processor, or stops a
    /// busy one (preferably not `avoid`).
    fn deliver(&self, avoid: Option<CpuId>) {
        let target = {
            let mut ledger = self.ledger();
            if !ledger.has_upcalls() {
                return;
            }
            ledger.delivery_target(avoid)
        };
        match target {
            Some(Err(strand)) => {
                self.strands.unblock(strand);
            }
            Some(Ok(cpu)) => self.processors.interrupt(KernelCpu(cpu.0)),
            None => {}
        }
    }

    /// The wake protocol and the invariant check (see [`Ledger::settle`]),
    /// when a processor is idle. (With none idle nothing can be left idle;
    /// a processor going idle checks for waiting threads under the lock
    /// after the thread that readied them published it, so none is missed.)
    fn settle(&self) {
        if self.idle.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.check_after_upcall();
    }

    /// The ledger, with the kernel's queued events applied.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        let mut ledger = self.ledger.lock();
        while let Some(event) = self.events.pop() {
            match event {
                Event::Added(cpu) => ledger.processor_added(cpu),
                Event::RevokeRequested(cpu) => ledger.revoke_requested(cpu),
                Event::Revoked(cpu) => {
                    self.upcalls_pending.store(true, Ordering::SeqCst);
                    ledger.processor_revoked(cpu);
                    self.hold(cpu, false);
                }
            }
        }
        ledger
    }

    /// A kernel event, from interrupt context.
    fn event(&self, event: Event) {
        if self.events.push(event).is_err() {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts (`true`) or ends the time `cpu` counts as held.
    fn hold(&self, cpu: CpuId, held: bool) {
        let Some(since) = self.held_since.get(usize::from(cpu.0)) else {
            return;
        };
        let now = self.strands.now().max(1);
        if held {
            since.store(now, Ordering::Relaxed);
        } else {
            let started = since.swap(0, Ordering::Relaxed);
            if started != 0 {
                self.granted_ns
                    .fetch_add(now.saturating_sub(started), Ordering::Relaxed);
            }
        }
    }

    /// This strand starts running the package on `cpu`.
    fn enter(&self, cpu: CpuId) {
        if let Some(count) = self.running.get(usize::from(cpu.0)) {
            if count.fetch_add(1, Ordering::AcqRel) != 0 {
                self.double_running.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// This strand stops running the package on `cpu`.
    fn leave(&self, cpu: CpuId) {
        if let Some(count) = self.running.get(usize::from(cpu.0)) {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
